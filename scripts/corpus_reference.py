#!/usr/bin/env python3
"""Pillow's verdict on every photo of the decoder conformance corpus.

The corpus is the JPEG, MPO, PNG and WebP files of Pillow's own test images
(`Tests/images` of the pinned pillow sdist), which `darkroom models fetch
--test-corpus` extracts into <home>/corpus/pillow/. For each file this opens
it as a user of Pillow would (Image.open, load, convert("RGB")) with Pillow's
default limits, and records whether that worked, the size, or the error.

Writes <home>/corpus/pillow.json, read by crates/darkroom/tests/corpus.rs:
  {"pillow": "11.3.0", "files": {"name.jpg": {"decoded": true, "size": [w, h]},
                                 "bad.png": {"decoded": false, "error": "..."}}}

Run with the hash-pinned venv that `darkroom models fetch` installs:
  var/venv/bin/python scripts/corpus_reference.py --home var
"""

import argparse
import json
import os
import sys
import warnings

import PIL
from PIL import Image, ImageOps

EXTENSIONS = (".jpg", ".jpeg", ".mpo", ".png", ".webp")


def verdict(path):
    try:
        with warnings.catch_warnings():
            # DecompressionBombWarning is a warning only: the photo decodes.
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                rgb = ImageOps.exif_transpose(im).convert("RGB")
                return {"decoded": True, "size": list(rgb.size)}
    except Exception as e:  # noqa: BLE001 - every failure is a verdict
        return {"decoded": False, "error": f"{type(e).__name__}: {e}"[:200]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    args = ap.parse_args()
    root = os.path.join(args.home, "corpus", "pillow")
    if not os.path.isdir(root):
        sys.exit(f"error: {root} is missing; run `darkroom models fetch --test-corpus` first")
    files = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if name.lower().endswith(EXTENSIONS):
                path = os.path.join(dirpath, name)
                files[os.path.relpath(path, root)] = verdict(path)
    out = os.path.join(args.home, "corpus", "pillow.json")
    with open(out, "w") as f:
        json.dump({"pillow": PIL.__version__, "files": dict(sorted(files.items()))}, f, indent=1)
    decoded = sum(v["decoded"] for v in files.values())
    print(f"Pillow {PIL.__version__}: {decoded} of {len(files)} corpus files decode -> {out}")


if __name__ == "__main__":
    main()
