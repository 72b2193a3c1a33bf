#!/usr/bin/env python3
"""Trains Darkroom's built-in stock vocabulary with Darkroom's own concept
platform, and writes data/stock_vocabulary.json (checked in).

1. Fetches the labelled corpus (scripts/stock_corpus.py: pinned packages,
   hash-checked photographs, labels from data/stock_labels.tsv).
2. Starts `darkroom serve` on loopback with a throw-away database, uploads
   every photograph and waits until the workers have analysed them (their
   embeddings stored).
3. For every keyword with at least MIN_SUPPORT photographs, POSTs
   /v1/concepts with the photos labelled with it as positives and every
   other photo as negatives (a label file lists every keyword that applies,
   so absence is a negative), at target precision 0.8, and waits for the
   version's out-of-fold metrics. Training names are `stock-<keyword>` (a
   built-in name cannot be trained over); they ship as `<keyword>`.
4. Ships a concept only when its out-of-fold precision is at least 0.8 at
   a recall of at least 0.5, reading its weights from the database, and
   prints the table the README shows. Also prints a learning curve (the
   same training at 5, 10, 20 and 50 positives) for a few concepts.

The same labels, packages and models give the same file: photos are
decoded the same way, examples are sorted, training is deterministic.

  scripts/stock_vocabulary.py [--home var] [--binary target/release/darkroom]
"""

import argparse
import base64
import hashlib
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stock_corpus  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
MIN_SUPPORT = 8
TARGET_PRECISION = 0.8
MIN_RECALL = 0.5
LEARNING_CURVE = ["outdoors", "animal", "architecture", "tree"]
CURVE_POINTS = [5, 10, 20, 50]


def call(base, method, path, body=None, content_type="application/json"):
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def progress(done, total, what):
    if not sys.stderr.isatty() and done != total:
        return
    width = 30
    filled = int(width * done / max(total, 1))
    print(f"\r{what}: [{'#' * filled}{'.' * (width - filled)}] {done}/{total}",
          end="" if done < total else "\n", file=sys.stderr, flush=True)


def wait_ready(base, name, version):
    while True:
        status, concept = call(base, "GET", f"/v1/concepts/{name}")
        v = next(v for v in concept["versions"] if v["version"] == version)
        if v["status"] != "training":
            return v
        time.sleep(0.2)


def train(base, name, positives, negatives):
    status, body = call(base, "POST", "/v1/concepts", {
        "name": name, "positives": positives, "negatives": negatives,
        "targetPrecision": TARGET_PRECISION, "activate": False})
    if status != 202:
        raise SystemExit(f"training {name}: {status} {body}")
    return wait_ready(base, name, body["version"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--binary", default=os.path.join(ROOT, "target", "release", "darkroom"))
    ap.add_argument("--out", default=os.path.join(ROOT, "data", "stock_vocabulary.json"))
    args = ap.parse_args()
    home = os.path.abspath(args.home)

    corpus, photos = stock_corpus.fetched(home)

    work = tempfile.mkdtemp(prefix="darkroom-stock-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [args.binary, "serve", "--home", home, "--listen", f"127.0.0.1:{port}",
         "--set", f'metadata.path="{work}/darkroom.db"',
         "--set", f'storage.path="{work}/blobs"',
         "--set", "pipeline.max_pending=100000"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "serve.log"), "w"))
    try:
        for _ in range(600):
            try:
                if urllib.request.urlopen(base + "/readyz", timeout=2).status == 200:
                    break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.5)
        else:
            raise SystemExit(f"darkroom serve did not become ready; see {work}/serve.log")

        ids = {}
        for n, (file, _) in enumerate(photos, 1):
            data = open(os.path.join(corpus, file), "rb").read()
            while True:
                status, body = call(base, "POST", "/v1/photos", data, "application/octet-stream")
                if status in (200, 202):
                    break
                if status not in (429, 503):
                    raise SystemExit(f"uploading {file}: {status} {body}")
                time.sleep(0.5)
            ids[file] = body["id"]
            progress(n, len(photos), "uploading")
        pending = set(ids.values())
        total = len(pending)
        failed = set()
        while pending:
            for pid in list(pending):
                _, record = call(base, "GET", f"/v1/photos/{pid}")
                if record["status"] in ("published", "needs_review", "rejected", "failed"):
                    pending.discard(pid)
                if record["status"] == "failed":
                    failed.add(pid)
            progress(total - len(pending), total, "analysing")
            time.sleep(0.5)

        if failed:
            print(f"{len(failed)} photos could not be analysed; left out", file=sys.stderr)
            photos = [(f, ks) for f, ks in photos if ids[f] not in failed]
        vocabulary = sorted({k for _, ks in photos for k in ks})
        results = []
        for n, keyword in enumerate(vocabulary, 1):
            positives = sorted(ids[f] for f, ks in photos if keyword in ks)
            negatives = sorted(ids[f] for f, ks in photos if keyword not in ks)
            progress(n, len(vocabulary), "training")
            if len(positives) < MIN_SUPPORT:
                results.append({"name": keyword, "support": len(positives),
                                "why": f"fewer than {MIN_SUPPORT} photographs"})
                continue
            version = train(base, f"stock-{keyword}", positives, negatives)
            m = version.get("metrics")
            row = {"name": keyword, "support": len(positives), "negatives": len(negatives),
                   "trainingMs": version.get("trainingMs")}
            if m is None:
                row["why"] = version.get("error", "failed")
            else:
                row.update(precision=round(m["precision"], 3), recall=round(m["recall"], 3),
                           ap=round(m["ap"], 3), threshold=m["threshold"], l2=m["l2"],
                           version=version["version"])
                if not (m["meetsTarget"] and m["precision"] >= TARGET_PRECISION
                        and m["recall"] >= MIN_RECALL):
                    row["why"] = (f"out-of-fold precision {m['precision']:.2f} at recall "
                                  f"{m['recall']:.2f}: below {TARGET_PRECISION} at {MIN_RECALL}")
            results.append(row)

        curve = []
        for keyword in LEARNING_CURVE:
            all_pos = sorted(ids[f] for f, ks in photos if keyword in ks)
            negatives = sorted(ids[f] for f, ks in photos if keyword not in ks)
            # A fixed, spread-out subset: every k-th positive in id order.
            for k in CURVE_POINTS:
                if k > len(all_pos):
                    continue
                step = len(all_pos) / k
                subset = [all_pos[int(i * step)] for i in range(k)]
                v = train(base, f"curve-{keyword}-{k}", subset, negatives)
                m = v["metrics"]
                curve.append((keyword, k, m["precision"], m["recall"], m["ap"], v.get("trainingMs")))

        db = sqlite3.connect(os.path.join(work, "darkroom.db"))
        shipped = []
        model = None
        for row in results:
            if "why" in row:
                continue
            weights, bias, body = db.execute(
                "SELECT weights, bias, body FROM concept_versions WHERE name = ? AND version = ?",
                (f"stock-{row['name']}", row["version"])).fetchone()
            model = json.loads(body)["model"]
            shipped.append({
                "name": row["name"], "threshold": row["threshold"], "bias": bias,
                "weights": base64.b64encode(weights).decode(),
                "precision": row["precision"], "recall": row["recall"], "ap": row["ap"],
                "support": row["support"], "negatives": row["negatives"]})
        version = db.execute("SELECT version FROM photo_embeddings WHERE model = ? LIMIT 1",
                             (model,)).fetchone()[0]
    finally:
        server.terminate()
        server.wait(timeout=60)

    labels_sha = hashlib.sha256(open(os.path.join(ROOT, "data", "stock_labels.tsv"), "rb").read()).hexdigest()
    doc = {
        "about": "Darkroom's built-in stock vocabulary: logistic heads over the embedding, "
                 "trained by scripts/stock_vocabulary.py with the concept platform from "
                 "data/stock_labels.tsv. Metrics are out-of-fold.",
        "model": model, "modelVersion": version, "labelsSha256": labels_sha,
        "targetPrecision": TARGET_PRECISION, "minRecall": MIN_RECALL,
        "concepts": shipped,
        "notShipped": [{k: r[k] for k in r if k in ("name", "support", "precision", "recall", "why")}
                       for r in results if "why" in r],
    }
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")

    print(f"\n{len(shipped)} concepts shipped to {args.out} "
          f"(precision >= {TARGET_PRECISION} at recall >= {MIN_RECALL}, out of fold)\n")
    print("| concept | precision | recall | AP | photos | training ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        if "why" not in r:
            print(f"| {r['name']} | {r['precision']:.2f} | {r['recall']:.2f} | {r['ap']:.2f} | "
                  f"{r['support']} | {r['trainingMs']} |")
    print("\nnot shipped:")
    for r in results:
        if "why" in r:
            print(f"  {r['name']} ({r['support']} photos): {r['why']}")
    print("\nlearning curve (out-of-fold, all negatives):")
    print("| concept | positives | precision | recall | AP | training ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for keyword, k, p, r, a, ms in curve:
        print(f"| {keyword} | {k} | {p:.2f} | {r:.2f} | {a:.2f} | {ms} |")


if __name__ == "__main__":
    main()
