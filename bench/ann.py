#!/usr/bin/env python3
"""Darkroom's vector index (crates/vector) beside FAISS's HNSW and usearch,
on the same vectors, in one run.

    python3 bench/ann.py [--home var] [--sizes 10000,100000] [--skip-darkroom]

1. Real embeddings: `darkroom analyze --embedding` over the labelled stock
   photographs (scripts/stock_corpus.py fetches them), 1280 dimensions.
2. `cargo run --release -p vector --example ann_bench -- ... --dump DIR`
   builds Darkroom's index at each size (the real embeddings, then blends
   of two real ones plus noise: see the example's documentation), prints
   recall@10 against brute force, queries/s, p50/p99, build time and
   memory, and writes the very vectors and queries it used.
3. In a hash-pinned venv (bench/ann-requirements.txt), FAISS IndexHNSWFlat
   and usearch Index, both inner product, M = 16, efConstruction = 100,
   one thread, are built on those vectors and measured the same way, with
   recall against numpy's exact answer.

Everything runs on one core (FAISS and usearch are told so); run it on an
idle machine. The load average is printed.
"""

import argparse
import hashlib
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
REQUIREMENTS = os.path.join(ROOT, "bench", "ann-requirements.txt")
K, QUERIES, DIMS = 10, 500, 1280


def ensure_venv(home):
    venv = os.path.join(home, "ann-venv")
    python = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, ".requirements.sha256")
    want = hashlib.sha256(open(REQUIREMENTS, "rb").read()).hexdigest()
    if os.path.exists(python) and os.path.exists(stamp) and open(stamp).read().strip() == want:
        return python
    if not os.path.exists(python):
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    print(f"installing {os.path.relpath(REQUIREMENTS, ROOT)} into {venv} (hash-pinned)",
          file=sys.stderr)
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "--require-hashes", "--only-binary=:all:", "-r", REQUIREMENTS], check=True)
    open(stamp, "w").write(want)
    return python


def peers(folder, sizes):
    """Runs inside the venv: FAISS and usearch on the dumped vectors."""
    import faiss
    import numpy as np
    import usearch.index

    faiss.omp_set_num_threads(1)
    for size in sizes:
        base = np.fromfile(os.path.join(folder, f"base-{size}.f32"), dtype="<f4").reshape(-1, DIMS)
        queries = np.fromfile(os.path.join(folder, f"queries-{size}.f32"),
                              dtype="<f4").reshape(-1, DIMS)
        # Exact top K, 50 queries at a time: at a million vectors the whole
        # similarity matrix and its argpartition would take 6 GiB.
        exact = np.concatenate([
            np.argpartition(-(queries[i:i + 50] @ base.T), K, axis=1)[:, :K]
            for i in range(0, len(queries), 50)
        ])

        def measure(name, search, build_s, mib):
            lat, hits = [], 0
            start = time.perf_counter()
            for q, truth in zip(queries, exact):
                t = time.perf_counter()
                found = search(q)
                lat.append((time.perf_counter() - t) * 1000)
                hits += len(set(found) & set(truth.tolist()))
            qps = len(queries) / (time.perf_counter() - start)
            lat.sort()
            p = lambda x: lat[round((len(lat) - 1) * x)]
            print(f"| {size} | {name} | {hits / (len(queries) * K):.3f} | {qps:.0f} | "
                  f"{p(0.5):.2f} | {p(0.99):.2f} | {build_s:.1f} | {mib:.0f} |", flush=True)

        t = time.perf_counter()
        index = faiss.IndexHNSWFlat(DIMS, 16, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 100
        index.add(base)
        build = time.perf_counter() - t
        # Counted, not serialised: a serialised copy at a million vectors
        # is another 5 GiB.
        hnsw = index.hnsw
        mib = (index.ntotal * DIMS * 4 + hnsw.neighbors.size() * 4 + hnsw.offsets.size() * 8
               + hnsw.levels.size() * 4 + hnsw.assign_probas.size() * 8) / 2**20
        for ef in (32, 64, 128):
            index.hnsw.efSearch = ef
            measure(f"FAISS HNSW M=16 ef={ef}",
                    lambda q: index.search(q[None, :], K)[1][0].tolist(), build, mib)
        del index  # at a million vectors, two indexes side by side would not fit in 24 GiB


        t = time.perf_counter()
        u = usearch.index.Index(ndim=DIMS, metric="ip", dtype="f32", connectivity=16,
                                expansion_add=100)
        u.add(np.arange(len(base)), base, threads=1)
        build = time.perf_counter() - t
        mib = u.memory_usage / 2**20
        for ef in (32, 64, 128):
            u.expansion_search = ef
            measure(f"usearch M=16 ef={ef}",
                    lambda q: u.search(q, K, threads=1).keys.tolist(), build, mib)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--peers-only", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.peers_only:
        peers(args.peers_only, sizes)
        return
    home = os.path.abspath(args.home)
    folder = os.path.join(home, "bench", "ann")
    os.makedirs(folder, exist_ok=True)
    embeddings = os.path.join(folder, "embeddings.jsonl")
    if not os.path.exists(embeddings):
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "stock_corpus.py"),
                        "--home", home], check=True)
        with open(embeddings + ".part", "w") as out:
            subprocess.run([os.path.join(ROOT, "target", "release", "darkroom"), "analyze",
                            "--home", home, "--embedding", os.path.join(home, "corpus", "stock")],
                           stdout=out, check=True)
        os.replace(embeddings + ".part", embeddings)
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "vector", "--example",
                    "ann_bench", "--", embeddings, *map(str, sizes), "--dump", folder],
                   cwd=ROOT, check=True)
    python = ensure_venv(home)
    subprocess.run([python, os.path.abspath(__file__), "--peers-only", folder,
                    "--sizes", args.sizes], check=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
