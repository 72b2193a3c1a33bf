#!/usr/bin/env python3
"""The control plane under a rising upload rate: where does it top out?

    python3 bench/scale.py [--home var] [--workers 2] [--rates 50,100,200,400,700,1000,1400]
                           [--seconds 10] [--concurrency 32]

1. It runs the scaled-out deployment on this machine: one `darkroom serve
   --role api` and N `--role worker --analyzer synthetic` processes on
   PostgreSQL (PIPELINE_POSTGRES_URL, else 127.0.0.1:5432; a schema of its
   own, dropped at the end), a NATS JetStream server of its own (started
   with monitoring, so its message counts can be read) and local storage.
   The synthetic analyzer answers every photo at once with an analysis of
   the real shape (`crates/pipeline/src/synthetic.rs`): the models are out
   of the measurement, and everything else (uploads, originals written,
   the compare-and-set transitions and their events, the queue, the review
   rules) is real. The photos are the 20 smallest labelled stock JPEGs
   (11-25 KB), each upload made unique.
2. For each rate, `darkroom bench --pipeline N --rate R` uploads open loop
   for `--seconds` and waits for every photo to reach an outcome. Meanwhile
   it samples the queue depth (the API's /metrics) and the sessions
   waiting on a lock (pg_stat_activity).
3. Per rate it prints photos/s in and out, p50 and p99 from upload to
   outcome (the photos' created_ms and updated_ms in PostgreSQL), the
   queue depth, PostgreSQL commits/s and WAL fsyncs/s, NATS messages/s,
   and the CPU of each process (% of one core).
4. It stops at the first rate the pipeline does not keep up with (outcomes
   lag the uploads by more than 2 s, or 1% of uploads refused or dropped)
   and names the bottleneck from the CPU figures: the process using the
   most, and whether the machine's cores were all busy.

Run it on an idle machine: it prints the load average it saw.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request

from serving import DARKROOM, Server, free_port

TICK = os.sysconf("SC_CLK_TCK")
CORES = os.cpu_count()


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def pids_named(name):
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() == name:
                        found.append(int(entry))
            except OSError:
                pass
    return found


def psql(url, sql):
    out = subprocess.run(["psql", url, "-At", "-c", sql], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"psql: {out.stderr.strip()}")
    return out.stdout.strip()


def nats_messages(monitor):
    with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as r:
        varz = json.load(r)
    return varz["in_msgs"] + varz["out_msgs"]


def queue_depth(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            body = r.read()
    except OSError:
        return None
    for line in body.decode(errors="replace").splitlines():
        if line.startswith("darkroom_pipeline_queue_depth "):
            return int(float(line.split()[1]))
    return None


class Sampler(threading.Thread):
    """Samples the queue depth and the sessions waiting on a lock."""

    def __init__(self, api, pg):
        super().__init__(daemon=True)
        self.api, self.pg = api, pg
        self.depths, self.locks = [], []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.5):
            depth = queue_depth(self.api.port)
            if depth is not None:
                self.depths.append(depth)
            self.locks.append(int(psql(
                self.pg, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")))


def snapshot(procs, pg, monitor):
    cpu = {name: sum(cpu_seconds(p) for p in pids) for name, pids in procs.items()}
    cpu["postgres"] = sum(cpu_seconds(p) for p in pids_named("postgres"))
    commits = int(psql(pg, "SELECT sum(xact_commit) FROM pg_stat_database"))
    fsyncs = int(psql(pg, "SELECT wal_sync FROM pg_stat_wal"))
    return time.perf_counter(), cpu, commits, fsyncs, nats_messages(monitor)


def smallest_jpegs(home, work, n=20):
    folder = os.path.join(work, "photos")
    if os.path.isdir(folder) and len(os.listdir(folder)) >= n:
        return folder
    stock = os.path.join(home, "corpus", "stock")
    if not os.path.isdir(stock):
        sys.exit("no stock photographs: run python3 scripts/stock_corpus.py first")
    jpegs = sorted((os.path.getsize(os.path.join(stock, f)), f)
                   for f in os.listdir(stock) if f.endswith(".jpg"))[:n]
    os.makedirs(folder, exist_ok=True)
    for _, name in jpegs:
        shutil.copy(os.path.join(stock, name), folder)
    return folder


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rates", default="50,100,200,400,700,1000,1400")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=32,
                    help="pipeline.concurrency: jobs each worker runs at once")
    ap.add_argument("--connections", type=int, default=8,
                    help="metadata.connections: each process's PostgreSQL pool")
    args = ap.parse_args()
    home = os.path.abspath(args.home)
    work = os.path.join(home, "bench", "scale")
    os.makedirs(work, exist_ok=True)
    if not os.path.exists(DARKROOM):
        sys.exit(f"{DARKROOM} is missing: run ./scripts/setup.sh first")
    photos = smallest_jpegs(home, work)
    pg_base = os.environ.get("PIPELINE_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    schema = f"scale_{os.getpid()}_{int(time.time())}"

    nats_dir = os.path.join(work, "nats")
    shutil.rmtree(nats_dir, ignore_errors=True)
    nats_port, monitor = free_port(), free_port()
    nats = subprocess.Popen(
        ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-m", str(monitor),
         "-sd", nats_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    settings = [
        'metadata.kind="postgres"', f'metadata.url="{pg_base}"', f'metadata.schema="{schema}"',
        f"metadata.connections={args.connections}",
        'queue.kind="nats"', f'queue.url="nats://127.0.0.1:{nats_port}"', f'queue.prefix="{schema}"',
        f"pipeline.concurrency={args.concurrency}",
        # The backlog limit would refuse uploads before the rate is found.
        "pipeline.max_pending=1000000",
    ]
    print(f"load average before: {os.getloadavg()[0]:.2f}; {CORES} cores")
    print(f"1 API + {args.workers} synthetic workers, PostgreSQL schema {schema}, NATS on "
          f":{nats_port}, local storage; {args.seconds:.0f} s per rate; 20 JPEGs of 11-25 KB\n",
          flush=True)
    api = workers = None
    try:
        time.sleep(0.5)
        api = Server(home, work, settings, args=["--role", "api"], log="api.log")
        workers = [Server(home, work, settings, args=["--role", "worker", "--analyzer", "synthetic"],
                          log=f"worker-{i}.log") for i in range(args.workers)]
        procs = {"api": [api.proc.pid], "workers": [w.proc.pid for w in workers],
                 "nats": [nats.pid]}
        print("| uploads/s asked | in /s | out /s | upload→outcome p50 / p99 ms | queue depth "
              "mean / max | PG commits/s | WAL fsyncs/s | lock waits | NATS msgs/s | CPU % "
              "api / workers / postgres / nats / load tool |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
        rows = []
        topped_out = False
        for rate in [float(r) for r in args.rates.split(",")]:
            count = int(rate * args.seconds)
            sampler = Sampler(api, pg_base)
            before = snapshot(procs, pg_base, monitor)
            started_ms = int(time.time() * 1000)
            sampler.start()
            tool = subprocess.Popen(
                [DARKROOM, "bench", "--url", f"http://127.0.0.1:{api.port}", "--photos", photos,
                 "--pipeline", str(count), "--rate", str(rate), "--max-in-flight", "512",
                 "--timeout", "30", "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            out = tool.stdout.read()
            _, status, usage = os.wait4(tool.pid, 0)
            tool.returncode = os.waitstatus_to_exitcode(status)
            sampler.stop.set()
            sampler.join()
            after = snapshot(procs, pg_base, monitor)
            if tool.returncode != 0:
                print(f"rate {rate:.0f}: the load tool failed (exit {tool.returncode})")
                break
            report = json.loads(out)
            elapsed = after[0] - before[0]
            cpu = {k: 100 * (after[1][k] - before[1][k]) / elapsed for k in after[1]}
            cpu["tool"] = 100 * (usage.ru_utime + usage.ru_stime) / elapsed
            p50, p99 = psql(pg_base, (
                f"SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY updated_ms - created_ms), "
                f"percentile_cont(0.99) WITHIN GROUP (ORDER BY updated_ms - created_ms) "
                f"FROM {schema}.photos WHERE created_ms >= {started_ms} AND status IN "
                f"('published', 'needs_review', 'rejected', 'failed')")).split("|")
            commits = (after[2] - before[2]) / elapsed
            fsyncs = (after[3] - before[3]) / elapsed
            msgs = (after[4] - before[4]) / elapsed
            depth = sampler.depths or [0]
            locks = sampler.locks or [0]
            upload_seconds = report["seconds"] - report["drain_seconds"]
            row = dict(rate=rate, inward=report["accepted"] / max(upload_seconds, 1e-9),
                       out=report["photos_per_second"], p50=float(p50 or 0), p99=float(p99 or 0),
                       depth=sum(depth) / len(depth), depth_max=max(depth), commits=commits,
                       fsyncs=fsyncs, locks=sum(locks) / len(locks), msgs=msgs, cpu=cpu,
                       drain=report["drain_seconds"], load=os.getloadavg()[0],
                       lost=report["refused"] + report["dropped"] + report["upload_errors"],
                       count=count)
            rows.append(row)
            print(f"| {rate:.0f} | {row['inward']:.0f} | {row['out']:.0f} | "
                  f"{row['p50']:.0f} / {row['p99']:.0f} | {row['depth']:.0f} / {row['depth_max']} | "
                  f"{commits:.0f} | {fsyncs:.0f} | {row['locks']:.1f} | {msgs:.0f} | "
                  f"{cpu['api']:.0f} / {cpu['workers']:.0f} / {cpu['postgres']:.0f} / "
                  f"{cpu['nats']:.0f} / {cpu['tool']:.0f} |", flush=True)
            if row["drain"] > 2 or row["lost"] > 0.01 * count:
                print(f"\nnot keeping up at {rate:.0f} uploads/s: outcomes {row['drain']:.1f} s "
                      f"behind the last upload; of {count} uploads {report['refused']} refused "
                      f"(429/503), {report['dropped']} dropped (too many waiting), "
                      f"{report['upload_errors']} failed")
                topped_out = True
                break
            time.sleep(2)
        if rows:
            verdict(rows, args.workers, topped_out)
    finally:
        for server in (workers or []) + ([api] if api else []):
            server.stop()
        nats.send_signal(signal.SIGTERM)
        nats.wait()
        psql(pg_base, f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


def verdict(rows, workers, topped_out):
    """Names the first bottleneck from the last rate's CPU, and what one API
    and one worker cost per 1,000 photos/s at the best rate kept up with."""
    last = rows[-1]
    if not topped_out:
        print(f"\nkept up with every rate asked, up to {last['rate']:.0f}/s: ask for more "
              f"(--rates) to find where it tops out")
    total = sum(last["cpu"].values())
    top = max(last["cpu"], key=last["cpu"].get)
    print(f"\nat {last['rate']:.0f} uploads/s the processes used {total:.0f}% of "
          f"{CORES * 100}% (all {CORES} cores); the most: {top} at {last['cpu'][top]:.0f}% "
          f"({', '.join(f'{k} {v:.0f}%' for k, v in sorted(last['cpu'].items(), key=lambda kv: -kv[1]))})")
    if not topped_out:
        pass
    elif total > 0.75 * CORES * 100 or last["load"] > CORES:
        print(f"first bottleneck: the machine's {CORES} cores, shared (load average "
              f"{last['load']:.1f}); {top} uses the largest share")
    else:
        print(f"first bottleneck: not CPU ({total:.0f}% of {CORES * 100}%): look at the lock waits "
              f"({last['locks']:.1f}) and WAL fsyncs ({last['fsyncs']:.0f}/s)")
    kept = [r for r in rows if r["drain"] <= 2 and r["lost"] <= 0.01 * r["count"]]
    if kept:
        best = kept[-1]
        per = 1000 / best["out"]
        print(f"at {best['out']:.0f} photos/s (the best rate kept up with), per 1,000 photos/s: "
              f"API {best['cpu']['api'] * per / 100:.2f} cores, each worker "
              f"{best['cpu']['workers'] / workers * per / 100:.2f} cores (all {workers}: "
              f"{best['cpu']['workers'] * per / 100:.2f}), PostgreSQL "
              f"{best['cpu']['postgres'] * per / 100:.2f}, NATS {best['cpu']['nats'] * per / 100:.2f}")


if __name__ == "__main__":
    main()
