#!/usr/bin/env python3
"""Measures each broad WordNet roll-up (animal, structure, vehicle, ...) on
the labelled stock corpus and writes data/rollup_calibration.json (checked
in, compiled into the binary): the score at or above which the roll-up is
reported, or null to drop it.

A roll-up's score is the summed probability of the ImageNet classes under
it, so a broad one collects mass from every uncertain photo: about 400 of
the 1000 classes are animals, and a forest path scores 0.4 "animal". Each
roll-up is handled one of three ways:

- replaced: a stock keyword of the same name is in the built-in vocabulary
  (data/stock_vocabulary.json), trained and measured for that word, so the
  roll-up is dropped in its favour;
- measured: the roll-up implies a labelled keyword (a dog is an animal, a
  church is architecture). Its floor is the lowest score at which, over
  the corpus photos scoring at least that, the keyword's precision is 0.8
  or more (at least 3 such photos); none: dropped;
- calibrated: object roll-ups with no keyword (tool, furniture,
  electronics, ...) are calibrated against photos that hold no object:
  corpus photos labelled landscape, sky, sea, mountain, field or
  desert, and not close-up or indoors. The floor is just above the highest
  score the roll-up reaches on them, so it never fires on an empty scene;
  with fewer than 20 such photos it is dropped.

  scripts/rollup_calibration.py [--home var] [--binary target/release/darkroom]
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stock_corpus  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
PRECISION = 0.8
MIN_PREDICTED = 3
SCENERY = {"landscape", "sky", "sea", "mountain", "field", "desert"}
NOT_SCENERY = {"close-up", "indoors", "macro"}

ANIMALS = """animal wildlife pet farm_animal mammal dog cat big_cat wolf fox bear primate monkey
elephant horse cattle sheep pig rodent rabbit marine_mammal fish shark sea_life reptile snake
lizard turtle amphibian spider""".split()
IMPLIES = {name.replace("_", " "): {"animal"} for name in ANIMALS}
IMPLIES.update({n: {"bird", "animal"} for n in ["bird", "bird of prey", "parrot", "water bird"]})
IMPLIES.update({n: {"insect", "animal"} for n in ["insect", "butterfly"]})
IMPLIES.update({"person": {"people"}})
IMPLIES.update({n: {"vehicle", "boat"} for n in
                ["vehicle", "car", "truck", "bus", "train", "motorcycle", "bicycle", "boat",
                 "ship", "aircraft", "rocket"]})
IMPLIES.update({n: {"food"} for n in
                ["food", "fruit", "vegetable", "mushroom", "dessert", "bread", "fast food"]})
IMPLIES.update({n: {"drink"} for n in ["drink", "coffee"]})
IMPLIES.update({"plant": {"plant", "flower", "tree", "leaf"}, "flower": {"flower"},
                "landscape": {"landscape"}, "mountain": {"mountain"},
                "coast": {"sea", "beach", "lake"}, "water": {"water"},
                "nature": {"nature"}, "bridge": {"bridge"}})
IMPLIES.update({n: {"architecture", "building"} for n in
                ["structure", "building", "architecture", "house", "church", "place of worship",
                 "tower", "monument", "shop", "fence"]})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "darkroom"))
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "rollup_calibration.json"))
    args = ap.parse_args()
    home = os.path.abspath(args.home)
    corpus, photos = stock_corpus.fetched(home)
    labels = dict(photos)

    # Every class probability of every photo (the roll-ups are summed here
    # from concepts.json, so floors already in the binary do not matter).
    run = subprocess.run(
        [args.binary, "analyze", "--home", home, "--top-k", "2000", "--min-confidence", "0",
         "--models", "efficientnet-lite0", corpus],
        check=True, capture_output=True, text=True)
    cmap = json.load(open(os.path.join(home, "models", "efficientnet-lite0", "concepts.json")))
    label_names = cmap["labels"]
    photos = {}
    for line in run.stdout.splitlines():
        a = json.loads(line)
        scores = dict(a["concepts"])
        photos[os.path.basename(a["photoId"])] = scores
    stock = {c["name"] for c in json.load(open(os.path.join(ROOT, "data",
                                                            "stock_vocabulary.json")))["concepts"]}

    def rollup_score(scores, classes):
        # Merged duplicate names appear once in `scores`: count each name once.
        return sum(scores.get(n, 0.0) for n in {label_names[i] for i in classes})

    scenery = [f for f, ks in labels.items() if ks & SCENERY and not ks & NOT_SCENERY]
    out, lines = {}, []
    for concept in cmap["concepts"]:
        name = concept["name"]
        scored = sorted(((rollup_score(photos[f], concept["classes"]), f) for f in labels),
                        reverse=True)
        if name in stock:
            out[name] = {"floor": None, "how": "replaced by the stock keyword of the same name"}
        elif name in IMPLIES:
            wanted = IMPLIES[name]
            floor, hits, best = None, 0, None
            for n, (score, f) in enumerate(scored, 1):
                hits += bool(labels[f] & wanted)
                if n >= MIN_PREDICTED and hits / n >= PRECISION and score > 0.0:
                    floor, best = score, (hits / n, n)
            how = f"measured against the keyword(s) {'/'.join(sorted(wanted))}"
            if floor is None:
                out[name] = {"floor": None, "how": how + f": precision never reaches {PRECISION}"}
            else:
                out[name] = {"floor": round(floor, 4), "precision": round(best[0], 3),
                             "photos": best[1], "how": how}
        elif len(scenery) >= 20:
            top = max(rollup_score(photos[f], concept["classes"]) for f in scenery)
            out[name] = {"floor": round(min(top + 0.05, 1.0), 4),
                         "how": f"calibrated: above its highest score on {len(scenery)} "
                                f"photos with no object (scenery)"}
        else:
            out[name] = {"floor": None, "how": "no measurement possible"}
        lines.append((name, out[name]))

    doc = {
        "about": "Floors of the broad WordNet roll-ups, measured on the labelled stock corpus "
                 "by scripts/rollup_calibration.py: a roll-up is reported only at or above its "
                 "floor; null drops it.",
        "model": "efficientnet-lite0",
        "labelsSha256": hashlib.sha256(open(os.path.join(ROOT, "data", "stock_labels.tsv"),
                                            "rb").read()).hexdigest(),
        "rollups": out,
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    dropped = sum(1 for _, o in lines if o["floor"] is None)
    print(f"{len(lines)} roll-ups: {dropped} dropped, {len(lines) - dropped} kept with a floor "
          f"({args.out})")
    for name, o in lines:
        floor = "dropped" if o["floor"] is None else f"floor {o['floor']:.3f}"
        extra = f", precision {o['precision']:.2f} over {o['photos']} photos" if "precision" in o else ""
        print(f"  {name:<20} {floor:<14} {o['how']}{extra}")


if __name__ == "__main__":
    main()
