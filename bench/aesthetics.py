#!/usr/bin/env python3
"""Personal aesthetic heads against simulated users with consistent tastes.

    python3 bench/aesthetics.py [--home var] [--signals 4,5,10,20,50] [--no-choice]

1. Real photos, really analysed: the labelled stock photographs
   (scripts/stock_corpus.py) are uploaded once to a `darkroom serve` of its
   own (HOME/bench/aesthetics/) and go through the whole pipeline.
2. Each taste is defined by the corpus's keywords (data/stock_labels.tsv),
   never by the embedding: `water` likes photos labelled water; `plant
   close-ups` likes close-ups of plants, leaves or flowers; `architecture`
   likes architecture; `animals` likes animals. Two photos in five are held
   out (by file name, fixed); the rest are where signals come from.
3. For each taste and each n of `--signals`, a fresh user gives n signals of
   each kind over HTTP (`POST /v1/users/{user}/feedback`): n photos of the
   taste liked (every third one picked), n others disliked (every third
   skipped), drawn with a fixed seed. The server trains that user's head in
   the background; the script waits until it is served.
4. Every held-out photo is scored for that user (`GET /v1/photos/{id}?user=`)
   and compared with the taste: the AUC (the chance a liked photo outscores
   a disliked one) and the Spearman correlation of the score with the taste
   (0/1). Beside it: the global head (`aesthetics.global`), retrained on
   command (`POST /v1/aesthetics/retrain`) after each round from every
   user's signals so far and the reviewers' decisions, and a random ranking.
5. It also prints the time from a user's last signal to their head being
   served (queue, training and the servers' poll, `pipeline.concept_poll_ms`
   = 200 here).
6. Then which model a head should be, by measurement: the example
   `head_choice` (crates/pipeline/examples/head_choice.rs) trains logistic
   regression, logistic regression as an offset on the global head, and a
   small MLP on the same draws of the same tastes and compares them on the
   held-out photos (`--no-choice` skips it).

Run it on an idle machine; it prints the load average it saw.
"""

import argparse
import hashlib
import json
import os
import random
import subprocess
import sys
import time

from serving import Server, seed

TASTES = {
    "water": lambda k: "water" in k,
    "plant close-ups": lambda k: "close-up" in k and bool(k & {"plant", "leaf", "flower"}),
    "architecture": lambda k: "architecture" in k,
    "animals": lambda k: "animal" in k,
}


def corpus(home):
    """(photo id, keywords, held out) for every labelled stock photograph."""
    folder = os.path.join(home, "corpus", "stock")
    rows = []
    with open(os.path.join(folder, "index.tsv")) as f:
        for line in f:
            if line.startswith("#") or not line.strip():
                continue
            name, _, _, keywords = line.rstrip("\n").split("\t")
            data = open(os.path.join(folder, name), "rb").read()
            held_out = int(name[:8], 16) % 5 < 2
            rows.append((hashlib.sha256(data).hexdigest(), set(keywords.split(",")), held_out))
    return rows


def auc(scores, labels):
    """The chance a positive outscores a negative (ties count half)."""
    pos = [s for s, l in zip(scores, labels) if l]
    neg = [s for s, l in zip(scores, labels) if not l]
    if not pos or not neg:
        return float("nan")
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def ranks(values):
    order = sorted(range(len(values)), key=lambda i: values[i])
    r = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            r[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(xs, ys):
    rx, ry = ranks(xs), ranks(ys)
    n = len(xs)
    mx, my = sum(rx) / n, sum(ry) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx) ** 0.5
    vy = sum((b - my) ** 2 for b in ry) ** 0.5
    return cov / (vx * vy) if vx and vy else float("nan")


def give(server, user, photo, signal):
    body = json.dumps({"photoId": photo, "signal": signal}).encode()
    status, answer = server.request("POST", f"/v1/users/{user}/feedback", body,
                                    {"Content-Type": "application/json"})
    if status != 202:
        sys.exit(f"feedback for {user}: {status} {answer[:200]!r}")
    return json.loads(answer)["atMs"]


def personal(server, user, photo):
    status, body = server.get(f"/v1/photos/{photo}?user={user}")
    if status != 200:
        sys.exit(f"GET /v1/photos/{photo}?user={user}: {status} {body[:200]!r}")
    return json.loads(body).get("aesthetics", {}).get("personal")


def global_through(server):
    status, body = server.get("/v1/aesthetics")
    if status != 200:
        sys.exit(f"GET /v1/aesthetics: {status} {body[:200]!r}")
    return json.loads(body).get("global", {}).get("throughMs", 0)


def retrain_global(server, through_ms, timeout=120):
    """Retrains the global head now and waits until it is served with every
    signal up to `through_ms`."""
    status, body = server.request("POST", "/v1/aesthetics/retrain", b"")
    if status != 202:
        sys.exit(f"POST /v1/aesthetics/retrain: {status} {body[:200]!r}")
    started = time.perf_counter()
    while global_through(server) < through_ms:
        if time.perf_counter() - started > timeout:
            sys.exit(f"the global head was not retrained within {timeout} s")
        time.sleep(0.1)


def global_score(server, photo):
    status, body = server.get(f"/v1/photos/{photo}")
    return json.loads(body).get("aesthetics", {}).get("global")


def head_choice(home, work, analysed):
    """Writes the tastes of every analysed photo and runs the example that
    compares the candidate models on them."""
    path = os.path.join(work, "tastes.tsv")
    with open(path, "w") as f:
        f.write("# tastes: " + ",".join(t.replace(" ", "-") for t in TASTES) + "\n")
        for photo, (keywords, held_out) in sorted(analysed.items()):
            mine = [t.replace(" ", "-") for t, likes in TASTES.items() if likes(keywords)]
            f.write(f"{photo}\t{int(held_out)}\t{','.join(mine)}\n")
    print("\nwhich model a head should be (head_choice: logistic, offset on the global head, "
          "MLP), on the same tastes:", flush=True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run(["cargo", "run", "--quiet", "--release", "-p", "pipeline", "--example",
                    "head_choice", "--", os.path.join(work, "data", "darkroom.db"), path],
                   cwd=root, check=True)


def wait_for_head(server, user, probe, timeout=120):
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if personal(server, user, probe) is not None:
            return time.perf_counter() - started
        time.sleep(0.05)
    sys.exit(f"{user}'s head was not served within {timeout} s")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--signals", default="4,5,10,20,50")
    ap.add_argument("--no-choice", action="store_true", help="skip the model comparison")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    home = os.path.abspath(args.home)
    sizes = [int(n) for n in args.signals.split(",")]
    rows = corpus(home)
    if not rows:
        sys.exit("no labelled stock photographs: run scripts/stock_corpus.py first")
    work = os.path.join(home, "bench", "aesthetics")
    os.makedirs(os.path.join(work, "data"), exist_ok=True)
    if not os.path.exists(os.path.join(work, "seeded")):
        print("seeding: real photos through the whole pipeline, once", file=sys.stderr)
        seed(home, work)
    # A fresh run: the users of an earlier run would keep their signals.
    run = time.strftime("%H%M%S")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    # The global head is retrained on command after each round, not on the
    # schedule.
    server = Server(home, work, settings=["pipeline.concept_poll_ms=200",
                                          "pipeline.aesthetic_global_every_s=86400"])
    try:
        analysed = {}
        for photo, keywords, held_out in rows:
            status, body = server.get(f"/v1/photos/{photo}")
            if status == 200 and json.loads(body).get("analysis"):
                analysed[photo] = (keywords, held_out)
        pool = {p: k for p, (k, h) in analysed.items() if not h}
        test = {p: k for p, (k, h) in analysed.items() if h}
        print(f"{len(analysed)} analysed stock photographs: {len(pool)} to give signals on, "
              f"{len(test)} held out\n")
        rng = random.Random(args.seed)
        results = []
        for n in sizes:
            users = {}
            last = 0
            for taste, likes in TASTES.items():
                user = f"{taste.replace(' ', '-')}-{n}-{run}"
                yes = sorted(p for p, k in pool.items() if likes(k))
                no = sorted(p for p, k in pool.items() if not likes(k))
                rng.shuffle(yes)
                rng.shuffle(no)
                yes, no = yes[:n], no[:n]
                for i, photo in enumerate(yes):
                    last = give(server, user, photo, "pick" if i % 3 == 2 else "like")
                for i, photo in enumerate(no):
                    last = give(server, user, photo, "skip" if i % 3 == 2 else "dislike")
                users[taste] = (user, len(yes), len(no))
            probe = next(iter(test))
            waits = [wait_for_head(server, u, probe) for u, _, _ in users.values()]
            retrain_global(server, last)
            everyone = [global_score(server, p) for p in test]
            for taste, (user, n_yes, n_no) in users.items():
                labels = [1 if TASTES[taste](k) else 0 for k in test.values()]
                mine = [personal(server, user, p) for p in test]
                chance = [rng.random() for _ in test]
                results.append((taste, n, n_yes, n_no, sum(labels), auc(mine, labels),
                                spearman(mine, labels), auc(everyone, labels),
                                spearman(everyone, labels), auc(chance, labels),
                                spearman(chance, labels)))
            print(f"n={n}: heads served {min(waits):.1f} to {max(waits):.1f} s after the last "
                  f"signal", flush=True)
        print("\n| taste | signals (for / against) | liked held out | AUC personal | AUC global "
              "| AUC random | Spearman personal | Spearman global | Spearman random |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for (taste, n, yes, no, liked, a_me, s_me, a_all, s_all, a_rnd, s_rnd) in results:
            print(f"| {taste} | {yes} / {no} | {liked} of {len(test)} | {a_me:.3f} | "
                  f"{a_all:.3f} | {a_rnd:.3f} | {s_me:.3f} | {s_all:.3f} | {s_rnd:.3f} |")
    finally:
        server.stop()
    if not args.no_choice:
        head_choice(home, work, analysed)
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
