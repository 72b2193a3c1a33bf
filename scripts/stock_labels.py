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

SOURCES = {
    "gnome-backgrounds", "sway-backgrounds", "lomiri-wallpapers",
    "lomiri-wallpapers-16.04", "lomiri-wallpapers-20.04", "ukui-wallpapers",
    "desktop-base", "debian-edu-artwork", "debian-edu-artwork-buster",
    "debian-edu-artwork-emerald", "debian-edu-artwork-homeworld",
    "debian-edu-artwork-softwaves", "debian-edu-artwork-spacefun",
    "mate-backgrounds", "scikit-image",
}


def main():
    files = [os.path.join(os.path.dirname(__file__), "..", "data", "stock_labels.tsv")]
    errors, seen = [], {}
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
