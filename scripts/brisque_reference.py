#!/usr/bin/env python3
"""Reference BRISQUE scores from OpenCV, and the degraded fixtures the Rust tests score.

What it does:

* scores the skimage photos (``var/raw/skimage/data``) with
  ``cv2.quality.QualityBRISQUE_compute`` and the model files from Debian's
  ``opencv-data`` (``var/raw/debs/usr/share/opencv4/quality``), each as is, blurred
  (``cv2.GaussianBlur`` ksize (0, 0), sigma 3) and with Gaussian noise (sd 25 from
  ``np.random.default_rng(0)``, a fresh generator per photo, added to the uint8
  BGR array that ``cv2.imread`` returns, clipped to 0..255 and truncated to uint8).
  This is how the numbers in ``MODELS.md`` section 3 were made: it reproduces
  astronaut 0.5 / 67.9 / 47.6, coffee 3.6 / 69.6 / 41.7, rocket 9.2 / 74.9 / 66.5.
* writes the degraded variants of the photos in ``FIXTURE_PHOTOS`` to
  ``crates/models/tests/fixtures/brisque/`` as 8-bit *grey* PNGs. OpenCV converts
  to grey (``COLOR_BGR2GRAY``, exact integer arithmetic) before anything else, so
  the grey PNG scores exactly the same as the colour image (checked below) at a
  third of the size. Crops or resizes would change the score, so none are made.
* writes ``references.json`` beside them with every score (unrounded).

Needs a throwaway venv, not the project's:

    python3 -m venv /tmp/cvvenv
    /tmp/cvvenv/bin/pip install opencv-contrib-python-headless numpy
    /tmp/cvvenv/bin/python scripts/brisque_reference.py

``--features`` also prints OpenCV's 36 features per image (for debugging the Rust
port feature by feature); ``--dump DIR`` writes each image's grey pixels as raw
bytes plus a JSON index with its features, for the same purpose.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
QUALITY_DIR = ROOT / "var/raw/debs/usr/share/opencv4/quality"
MODEL = QUALITY_DIR / "brisque_model_live.yml"
RANGE = QUALITY_DIR / "brisque_range_live.yml"
PHOTO_DIR = ROOT / "var/raw/skimage/data"
FIXTURE_DIR = ROOT / "crates/models/tests/fixtures/brisque"

PHOTOS = ["astronaut.png", "coffee.png", "rocket.jpg", "chelsea.png", "camera.png"]
# Only these photos' degraded variants are committed as fixtures (size).
FIXTURE_PHOTOS = ["coffee.png", "rocket.jpg"]

BLUR_SIGMA = 3.0
NOISE_SD = 25.0
NOISE_SEED = 0


def score(img: np.ndarray) -> float:
    return float(cv2.quality.QualityBRISQUE_compute(img, str(MODEL), str(RANGE))[0])


def features(img: np.ndarray) -> list[float]:
    return [float(v) for v in cv2.quality.QualityBRISQUE_computeFeatures(img).ravel()]


def blurred(bgr: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(bgr, (0, 0), BLUR_SIGMA)


def noisy(bgr: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(NOISE_SEED)
    return np.clip(bgr + rng.normal(0.0, NOISE_SD, bgr.shape), 0, 255).astype(np.uint8)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--features", action="store_true", help="print OpenCV's 36 features too")
    ap.add_argument("--dump", type=Path, help="write grey raw pixels + features here (debug)")
    ap.add_argument("--no-write", action="store_true", help="do not touch the fixtures")
    args = ap.parse_args()

    for p in (MODEL, RANGE, PHOTO_DIR):
        if not p.exists():
            print(f"missing {p}: run `darkroom models fetch` first", file=sys.stderr)
            return 1

    references: dict = {
        "opencv": cv2.__version__,
        "model": {"file": MODEL.name, "sha256": sha256(MODEL)},
        "range": {"file": RANGE.name, "sha256": sha256(RANGE)},
        "degradations": {
            "blur3": f"cv2.GaussianBlur(bgr, (0, 0), {BLUR_SIGMA})",
            "noise25": (
                f"np.clip(bgr + np.random.default_rng({NOISE_SEED}).normal(0, {NOISE_SD}, "
                "bgr.shape), 0, 255).astype(np.uint8)"
            ),
        },
        "photos": {},
        "fixtures": {},
    }
    dump_index: dict = {}
    if args.dump:
        args.dump.mkdir(parents=True, exist_ok=True)
    if not args.no_write:
        FIXTURE_DIR.mkdir(parents=True, exist_ok=True)

    print(f"OpenCV {cv2.__version__}")
    print(f"{'photo':<16}{'original':>10}{'blur3':>10}{'noise25':>10}")
    for name in PHOTOS:
        bgr = cv2.imread(str(PHOTO_DIR / name), cv2.IMREAD_COLOR)
        stem = Path(name).stem
        variants = {"original": bgr, "blur3": blurred(bgr), "noise25": noisy(bgr)}
        scores = {}
        for variant, img in variants.items():
            s = score(img)
            gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
            # The grey image is what BRISQUE sees; it must score identically.
            sg = score(gray)
            if abs(s - sg) > 1e-9:
                print(f"{stem}/{variant}: grey scores {sg}, colour {s}", file=sys.stderr)
                return 1
            scores[variant] = s
            if args.features:
                f = features(img)
                print(f"  {stem}/{variant}: " + " ".join(f"{v:.6g}" for v in f))
            if args.dump:
                key = f"{stem}_{variant}"
                (args.dump / f"{key}.gray").write_bytes(gray.tobytes())
                dump_index[key] = {
                    "width": gray.shape[1],
                    "height": gray.shape[0],
                    "score": s,
                    "features": features(img),
                }
            if variant != "original" and name in FIXTURE_PHOTOS and not args.no_write:
                fixture = f"{stem}_{variant}.png"
                path = FIXTURE_DIR / fixture
                cv2.imwrite(str(path), gray, [cv2.IMWRITE_PNG_COMPRESSION, 9])
                back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
                assert back.ndim == 2 and np.array_equal(back, gray), fixture
                references["fixtures"][fixture] = {
                    "photo": name,
                    "variant": variant,
                    "score": s,
                    "bytes": path.stat().st_size,
                }
        references["photos"][name] = scores
        print(f"{name:<16}" + "".join(f"{scores[v]:>10.2f}" for v in variants))

    if not args.no_write:
        out = FIXTURE_DIR / "references.json"
        out.write_text(json.dumps(references, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
        for fixture, info in references["fixtures"].items():
            print(f"  {fixture}: {info['bytes']} bytes, score {info['score']:.3f}")
    if args.dump:
        (args.dump / "index.json").write_text(json.dumps(dump_index, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
