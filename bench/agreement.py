#!/usr/bin/env python3
"""How closely the Python peer agrees with Darkroom, photo by photo: the
figures `bench/peer/README.md` quotes.

    python3 bench/agreement.py [--home var] [--darkroom target/release/darkroom]

Runs `darkroom analyze --threads 1 --top-k 100 --min-confidence 0` on the camera
JPEGs and the sample photos, starts the peer (`bench/peer/app.py`, no draft,
the venv `bench/compare.py` makes) and sends it each photo alone with the same
knobs, then prints, over all photos:

- concepts: the largest difference of a score both report, and the photos
  whose concept lists differ;
- `confidence`, `size`, `modelReleaseRequired`: the largest difference, or
  the photos where they differ;
- faces: counts, the largest box corner difference in pixels, the largest
  score difference;
- BRISQUE: the largest difference where both are inside OpenCV's 0..100, and
  the photos where OpenCV clamps (Darkroom reports the raw score).

Standard library only. Exits 1 when a photo fails on either side.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    PEER_APP, PEER_THREAD_CAPS, ROOT, Fail, Server, ensure_peer_venv, free_port, http, say,
)

TOP_K = 100


def darkroom_results(darkroom: Path, home: Path, photos: list[Path]) -> dict[str, dict]:
    cmd = [str(darkroom), "--home", str(home), "analyze", "--threads", "1", "--top-k", str(TOP_K),
           "--min-confidence", "0", *map(str, photos)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise Fail(f"`{' '.join(cmd)}` failed:\n{r.stderr[-2000:]}")
    out = {}
    for line in r.stdout.splitlines():
        result = json.loads(line)
        out[Path(result["photoId"]).name] = result
    return out


def peer_results(python: Path, home: Path, photos: list[Path], logdir: Path) -> dict[str, dict]:
    import os

    port = free_port()
    argv = [str(python), str(PEER_APP), "--home", str(home), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1", "--threads", "1"]
    server = Server("peer", argv, port, logdir, env={**os.environ, **PEER_THREAD_CAPS})
    out = {}
    try:
        server.wait_ready(lambda: http("GET", f"{server.url}/healthz") == 200)
        for photo in photos:
            body = json.dumps({"images": [{"id": photo.name, "data": base64.b64encode(photo.read_bytes()).decode()}],
                               "topK": TOP_K, "minConfidence": 0.0}).encode()
            request = urllib.request.Request(f"{server.url}/v1/analyze", data=body, method="POST",
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as response:
                out[photo.name] = json.loads(response.read())["results"][0]
    finally:
        server.stop()
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=ROOT / "var")
    p.add_argument("--darkroom", type=Path, default=ROOT / "target/release/darkroom")
    args = p.parse_args()
    home = args.home.resolve()
    photos = sorted(
        [*(home / "photos/camera").glob("*.jpg"),
         *(q for q in (home / "samples").iterdir() if q.suffix.lower() in (".jpg", ".png"))])
    if not photos:
        raise Fail(f"no photos under {home}: run ./scripts/setup.sh first")
    say(f"darkroom analyze --threads 1 on {len(photos)} photos")
    ours = darkroom_results(args.darkroom, home, photos)
    say("the peer, one photo per request")
    theirs = peer_results(ensure_peer_venv(home), home, photos, Path(tempfile.mkdtemp(prefix="darkroom-agree-")))

    failed = [n for n in ours if "error" in ours[n] or "error" in theirs.get(n, {"error": 1})]
    if failed:
        raise Fail(f"photos failed on one side: {failed}")
    concept_diff, concept_lists, confidence_diff = 0.0, [], 0.0
    size_differs, release_differs, face_counts = [], [], []
    box_diff, face_score_diff, brisque_diff, clamped = 0, 0.0, 0.0, []
    for name in sorted(ours):
        a, b = ours[name], theirs[name]
        sa, sb = dict(map(tuple, a["concepts"])), dict(map(tuple, b["concepts"]))
        for concept in sa.keys() & sb.keys():
            concept_diff = max(concept_diff, abs(sa[concept] - sb[concept]))
        if [c for c, _ in a["concepts"][:10]] != [c for c, _ in b["concepts"][:10]]:
            concept_lists.append(name)
        confidence_diff = max(confidence_diff, abs(a["confidence"] - b["confidence"]))
        if a["size"] != b["size"]:
            size_differs.append(name)
        if a["modelReleaseRequired"] != b["modelReleaseRequired"]:
            release_differs.append(name)
        if len(a["faces"]) != len(b["faces"]):
            face_counts.append(f"{name} {len(a['faces'])}/{len(b['faces'])}")
        else:
            for fa, fb in zip(a["faces"], b["faces"]):
                box_diff = max(box_diff, max(abs(x - y) for x, y in zip(fa["box"], fb["box"])))
                face_score_diff = max(face_score_diff, abs(fa["score"] - fb["score"]))
        ra, rb = a.get("brisque"), b.get("brisque")
        if ra is not None and rb is not None:
            if 0.0 < ra < 100.0:
                brisque_diff = max(brisque_diff, abs(ra - rb))
            else:
                clamped.append(f"{name} {ra:.1f} (OpenCV {rb:.1f})")
    faces = sum(len(r["faces"]) for r in ours.values())
    print(f"{len(ours)} photos ({len(list((home / 'photos/camera').glob('*.jpg')))} camera JPEGs and the samples)")
    print(f"concept scores: largest difference {concept_diff:.2g}; top-10 lists differ on: {concept_lists or 'none'}")
    print(f"confidence: largest difference {confidence_diff:.2g}")
    print(f"size differs on: {size_differs or 'none'}; modelReleaseRequired differs on: {release_differs or 'none'}")
    print(f"faces: {faces} in all; counts differ on: {face_counts or 'none'}; box corners within {box_diff} px, "
          f"scores within {face_score_diff:.3g}")
    print(f"BRISQUE: within {brisque_diff:.2g} where OpenCV does not clamp; clamped by OpenCV: {clamped or 'none'}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
