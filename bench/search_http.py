#!/usr/bin/env python3
"""`GET /v1/search` over HTTP with a million photos in the catalogue.

    python3 bench/search_http.py [--home var] [--photos 1000000] [--runs 200]
                                 [--graph FILE | --no-graph]

1. Real photos, really analysed: the labelled stock photographs
   (scripts/stock_corpus.py) plus the camera and sample photos are uploaded
   once to a `darkroom serve` of their own (HOME/bench/search-http/) and
   go through the whole pipeline (analysis, review rules).
2. `cargo run --release -p search --example scale -- --for-server` makes
   `--photos` documents from those records (copies with their own ids,
   upload times, one of 1,000 uploaders, concept scores moved by up to
   ±0.05; see the example) and leaves the catalogue's snapshot where the
   server loads it. With the graph bench/ann.py built at that size
   (HOME/bench/ann/hnsw-<N>.bin, made by `bench/ann.py --sizes ...,N`:
   real stock-photo embeddings and blends of them), `similarTo` works on
   every photo; without it, the similar-photo rows are skipped.
3. The server starts on that database, loads the snapshot, and each query
   is sent `--runs` times in a row on one keep-alive connection (one client,
   so the figures are latencies, not a load test). Beside each: the
   catalogue's own time for the same query in the same process, taken
   from the scale example's run (in-process, one core) — the difference
   is what HTTP, JSON and the thumbnail URLs add.

Run it on an idle machine; it prints the load average it saw.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.parse

from serving import DARKROOM, ROOT, Server, seed


# (name, query string): the filtered and unfiltered cases the issue asks for.
TEXT_CASES = [
    ("everything published, newest", ""),
    ("filtered: widescreen, large, one uploader", "orientation=widescreen&size=large&uploader=u7"),
    ("q=flower", "q=flower"),
    ("q=animal (WordNet: every animal)", "q=animal"),
    ("filtered: q=animal, widescreen", "q=animal&orientation=widescreen"),
    ("filtered: concept=plant&concept=nature", "concept=plant&concept=nature"),
    ("q=waterfront at dusk (text encoder)", "q=waterfront+at+dusk"),
]
SIMILAR_CASES = [
    ("similarTo, unfiltered", ""),
    ("filtered: similarTo, widescreen", "&orientation=widescreen"),
    ("filtered: similarTo, one uploader (1 in 1,000)", "&uploader=u7"),
]


def percentile(sorted_ms, p):
    return sorted_ms[round((len(sorted_ms) - 1) * p)]


def measure(server, path, runs):
    status, body = server.get(path)
    if status != 200:
        sys.exit(f"GET {path}: {status} {body[:300]!r}")
    total = json.loads(body)["total"]
    lat = []
    for _ in range(runs):
        t = time.perf_counter()
        status, body = server.get(path)
        lat.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status, body[:200])
    lat.sort()
    return total, percentile(lat, 0.5), percentile(lat, 0.99), len(body)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--photos", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--graph", help="an HNSW graph of --photos nodes "
                    "(default: HOME/bench/ann/hnsw-<photos>.bin when it exists)")
    ap.add_argument("--no-graph", action="store_true", help="no vectors: skip similarTo")
    args = ap.parse_args()
    home = os.path.abspath(args.home)
    if not os.path.exists(DARKROOM):
        sys.exit("no target/release/darkroom: run ./scripts/setup.sh first")
    work = os.path.join(home, "bench", "search-http")
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    if not os.path.exists(os.path.join(work, "seeded")):
        shutil.rmtree(os.path.join(work, "data"), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "blobs"), ignore_errors=True)
        os.makedirs(os.path.join(work, "data"))
        print("seeding: real photos through the whole pipeline, once", file=sys.stderr)
        seed(home, work)
    graph = None if args.no_graph else (
        args.graph or os.path.join(home, "bench", "ann", f"hnsw-{args.photos}.bin"))
    if graph and not os.path.exists(graph):
        print(f"no graph at {graph} (bench/ann.py --sizes {args.photos} makes it): "
              "similarTo skipped", file=sys.stderr)
        graph = None

    print(f"load average before: {os.getloadavg()[0]:.2f}")
    scale = ["cargo", "run", "--quiet", "--release", "-p", "search", "--example", "scale", "--",
             "--db", os.path.join(work, "data", "darkroom.db"), "--photos", str(args.photos),
             "--no-peer", "--runs", "20", "--for-server",
             "--lexicon", os.path.join(home, "models", "efficientnet-lite0", "lexicon.tsv")]
    if graph:
        scale += ["--graph", graph]
    subprocess.run(scale, cwd=ROOT, check=True)

    started = time.perf_counter()
    server = Server(home, work)
    try:
        while True:
            status, body = server.get("/v1/search?limit=1")
            if status == 200:
                break
            if status != 503 or server.proc.poll() is not None:
                sys.exit(f"/v1/search: {status} {body[:300]!r}")
            time.sleep(0.2)
        print(f"\nserver up and the catalogue loaded in {time.perf_counter() - started:.1f} s "
              f"(from the snapshot)")
        print(f"\n`GET /v1/search` over HTTP, {args.photos:,} photos, one client, "
              f"{args.runs} runs each (limit 20, facets on):\n")
        print("| query | matches | p50 ms | p99 ms | response KiB |")
        print("|---|---:|---:|---:|---:|")
        for name, qs in TEXT_CASES:
            total, p50, p99, size = measure(server, f"/v1/search?{qs}", args.runs)
            print(f"| {name} | {total:,} | {p50:.2f} | {p99:.2f} | {size / 1024:.1f} |",
                  flush=True)
        if graph:
            probe = f"{12345 * 0x9E3779B9 + 1:064x}"
            for name, qs in SIMILAR_CASES:
                path = f"/v1/search?similarTo={urllib.parse.quote(probe)}{qs}"
                total, p50, p99, size = measure(server, path, args.runs)
                print(f"| {name} | {total:,} | {p50:.2f} | {p99:.2f} | {size / 1024:.1f} |",
                      flush=True)
        rss = 0
        with open(f"/proc/{server.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
        print(f"\nserver resident memory with the catalogue loaded: {rss / 2**30:.2f} GiB")
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
