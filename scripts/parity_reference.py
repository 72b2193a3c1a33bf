#!/usr/bin/env python3
"""PIL reference outputs for the `imaging` crate's parity tests.

For each photo this writes:

  <stem>.effnet224.png     EfficientNet-Lite0 input before normalisation:
                           Image.open(p) -> ImageOps.exif_transpose -> convert("RGB"),
                           resize the short side to 256 with Image.BICUBIC, the long side
                           to round(256 * long / short) (Python's round, half to even),
                           centre-crop 224x224 at ((len - 224) // 2), uint8: the pipeline
                           EfficientNet-Lite0's reference numbers were made with.
  <stem>.blazeface128.png  BlazeFace-style letterbox: keep aspect, fit inside 128x128
                           (the short side rounded half up, at least 1), Image.BILINEAR,
                           pasted centred at ((128 - w) // 2, (128 - h) // 2) on black.
  manifest.json            the photos (where they are, their sha256 and size), the
                           Pillow version, read by crates/imaging/tests/parity.rs.

Two sets, because only some photos may be redistributed:

* default: the public-domain / CC0 scikit-image photos (astronaut, chelsea, coffee,
  rocket, camera) and small inputs synthesised from chelsea and rocket for paths the
  photos do not exercise (lossy WebP, CMYK JPEG, a JPEG stored rotated with EXIF
  orientation 6, a PNG with an eXIf chunk saying orientation 5). The references, the
  synthesised inputs (inputs/) and the manifest are checked in under
  crates/imaging/tests/fixtures/parity/.
* --local: photos whose licences forbid checking in anything derived from them
  (scikit-image's motorcycle_left.png, "tests only"; the GPL-2+ mate-backgrounds
  camera JPEGs). Their references and manifest go to <home>/parity/ (not checked in;
  scripts/test.sh regenerates them before `cargo test`). Photos named on the command
  line are added to this set (their stems must differ from the others').

The photos come from `darkroom models fetch`: <home>/samples/ (scikit-image) and
<home>/photos/camera/ (camera JPEGs). <home> is --home, else $DARKROOM_HOME, else
var/ at the workspace root; a relative one is taken from the current folder.
Run from the workspace root with the venv the set-up step makes:

    var/venv/bin/python scripts/parity_reference.py             # checked-in set
    var/venv/bin/python scripts/parity_reference.py --local     # var/parity/
    var/venv/bin/python scripts/parity_reference.py a.jpg b.png # --local, plus these

then `cargo test -p imaging --test parity`.
"""

import argparse
import hashlib
import json
import os
import sys

import PIL
from PIL import Image, ImageOps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "crates", "imaging", "tests", "fixtures", "parity")
SCRIPT = os.path.abspath(__file__)

# Relative to the Darkroom home.
SAMPLES = "samples"
CAMERA = "photos/camera"
CHECKED_IN_PHOTOS = [
    f"{SAMPLES}/astronaut.png",
    f"{SAMPLES}/chelsea.png",
    f"{SAMPLES}/coffee.png",
    f"{SAMPLES}/rocket.jpg",
    f"{SAMPLES}/camera.png",  # greyscale
]
LOCAL_PHOTOS = [
    f"{SAMPLES}/motorcycle_left.png",
    f"{CAMERA}/Dune.jpg",  # camera JPEG with EXIF, 4:2:2 chroma
    f"{CAMERA}/GreenMeadow.jpg",  # progressive, 4:2:0 chroma
    f"{CAMERA}/Wood.jpg",  # 2560x1920 camera JPEG with EXIF, 4:2:2 chroma
]


def default_home():
    return os.environ.get("DARKROOM_HOME") or os.path.join(ROOT, "var")


def missing(path):
    sys.exit(f"{path} is missing: run `darkroom models fetch` first")


def make_derived_inputs(home):
    """Writes the synthesised inputs into FIXTURES/inputs; returns their names there."""
    inputs = os.path.join(FIXTURES, "inputs")
    os.makedirs(inputs, exist_ok=True)
    chelsea = load(photo_path(home, f"{SAMPLES}/chelsea.png"))
    rocket = load(photo_path(home, f"{SAMPLES}/rocket.jpg"))
    out = []

    def put(name, im, **kw):
        im.save(os.path.join(inputs, name), **kw)
        out.append(f"inputs/{name}")

    put("chelsea.q90.webp", chelsea, quality=90)
    put("chelsea.cmyk.jpg", chelsea.convert("CMYK"), quality=90)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after a 90-degree clockwise turn
    put("rocket.orient6.jpg", rocket.transpose(Image.Transpose.ROTATE_90), quality=90, exif=exif)
    exif = Image.Exif()
    exif[0x0112] = 5  # shown transposed
    small = chelsea.resize((226, 150), Image.LANCZOS)
    put("chelsea.orient5.png", small.transpose(Image.Transpose.TRANSPOSE), exif=exif, optimize=True)
    return out


def photo_path(home, rel):
    path = os.path.join(home, rel)
    if not os.path.exists(path):
        missing(path)
    return path


def load(path):
    """What the training pipelines do: decode, orient, drop alpha / expand grey."""
    with Image.open(path) as im:
        return ImageOps.exif_transpose(im).convert("RGB")


def effnet224(im, short=256, crop=224):
    w, h = im.size
    if w <= h:
        size = (short, round(short * h / w))
    else:
        size = (round(short * w / h), short)
    im = im.resize(size, Image.BICUBIC)
    # A negative offset (crop larger than the image) pads with black.
    left = (size[0] - crop) // 2
    top = (size[1] - crop) // 2
    return im.crop((left, top, left + crop, top + crop))


def letterbox(im, side=128):
    w, h = im.size
    if w * side >= h * side:
        size = (side, max(1, min(side, (h * side + w // 2) // w)))
    else:
        size = (max(1, min(side, (w * side + h // 2) // h)), side)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    canvas.paste(im.resize(size, Image.BILINEAR), ((side - size[0]) // 2, (side - size[1]) // 2))
    return canvas


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def write_set(out, photos, script_hash):
    """photos: (root, rel, absolute path); root is "home", "manifest" or "absolute"."""
    os.makedirs(out, exist_ok=True)
    entries = []
    for root, rel, path in photos:
        stem = os.path.basename(path).rsplit(".", 1)[0]
        if any(e["stem"] == stem for e in entries):
            sys.exit(f"two photos named {stem}: rename one")
        im = load(path)
        effnet224(im).save(os.path.join(out, f"{stem}.effnet224.png"), optimize=True)
        letterbox(im).save(os.path.join(out, f"{stem}.blazeface128.png"), optimize=True)
        entries.append(
            {
                "stem": stem,
                "root": root,
                "path": rel,
                "sha256": sha256(path),
                "width": im.size[0],
                "height": im.size[1],
            }
        )
        print(f"{stem}: {im.size[0]}x{im.size[1]}")
    manifest = {"pillow": PIL.__version__}
    if script_hash:
        manifest["script_sha256"] = sha256(SCRIPT)
    manifest["photos"] = entries
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {os.path.join(out, 'manifest.json')}")


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--home", default=default_home(), help="Darkroom home (default: $DARKROOM_HOME, else var/)")
    parser.add_argument("--local", action="store_true", help="write the not-redistributable set to <home>/parity/")
    parser.add_argument("photos", nargs="*", help="more photos for the --local set (implies --local)")
    args = parser.parse_args(argv)
    home = os.path.abspath(args.home)
    if args.local or args.photos:
        photos = [("home", rel, photo_path(home, rel)) for rel in LOCAL_PHOTOS]
        for photo in args.photos:
            path = os.path.abspath(photo)
            if not os.path.exists(path):
                sys.exit(f"{photo} is missing")
            photos.append(("absolute", path, path))
        # Not checked in: the hash of this script lets the test spot references made
        # by an older version of it.
        write_set(os.path.join(home, "parity"), photos, script_hash=True)
    else:
        photos = [("home", rel, photo_path(home, rel)) for rel in CHECKED_IN_PHOTOS]
        photos += [("manifest", rel, os.path.join(FIXTURES, rel)) for rel in make_derived_inputs(home)]
        write_set(FIXTURES, photos, script_hash=False)


if __name__ == "__main__":
    main(sys.argv[1:])
