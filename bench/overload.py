#!/usr/bin/env python3
"""Overload: does what is admitted stay fast and small at ten times capacity?

    python3 bench/overload.py [--home var] [--photos var/photos/camera]
        [--contenders darkroom,peer] [--duration 20] [--settle 10]
        [--darkroom target/release/darkroom] [--markdown] [--json FILE]

For each contender (`darkroom serve` as configured by default, then the
FastAPI peer in `bench/peer/`), alone on the machine:

1. start it on a free local port, wait until it is ready, warm it up for
   `--warmup` seconds at 8 clients (not measured);
2. measure its capacity: closed loop, 8 clients, `--duration` seconds;
3. run each load in turn for `--duration` seconds, each after the server
   has been idle for `--settle` seconds: open loop (Poisson arrivals) at
   0.5×, 1×, 2× and 10× the capacity, then closed loop at 8 and 80
   clients. For each: photos/s, p50 and p99 of the admitted (200)
   requests, the share refused by the server (429/503) and the share the
   load tool dropped itself (more than 256 requests waiting), the peak
   RSS of the server's process tree during the load (sampled every
   100 ms), its RSS just before, and its RSS `--settle` seconds after.

The load tool sends `Expect: 100-continue` (as curl does for large
bodies): a server that refuses on the headers is not sent the body.
Uvicorn honours it too. 4 photos per request from `--photos`, every
photo in turn, so with the default folder the 18 MP progressive
Elephants photo is in the mix beside the 12 camera JPEGs (about 3 MP).

The targets (issue 18), from the open-loop rows: at 10× offered load,
throughput at least 95 % of the 1× figure, p99 at most 2× the 1× p99,
peak RSS at most 1.25× the 1× peak, and the RSS `--settle` seconds after
the burst within 10 % of the RSS before it. Printed, not asserted.
Standard library only; the peer's venv is created when missing (see
compare.py).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import (  # noqa: E402
    PEER_APP, PEER_THREAD_CAPS, ROOT, Fail, Server, ensure_peer_venv, first_photo, free_port, http,
    machine, process_tree, say, status_kib,
)
import subprocess  # noqa: E402

CONTENDERS = ["darkroom", "peer"]
OPEN_LOADS = [0.5, 1.0, 2.0, 10.0]
CLOSED_LOADS = [8, 80]
IMAGES_PER_REQUEST = 4
MIB = 1024


def rss_kib(root: int) -> int:
    return sum(status_kib(pid, "VmRSS") for pid in process_tree(root))


class RssSampler(threading.Thread):
    """The peak of the tree's summed RSS, every `period` seconds."""

    def __init__(self, root: int, period: float = 0.1):
        super().__init__(daemon=True)
        self.root, self.period, self.max_kib = root, period, 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.max_kib = max(self.max_kib, rss_kib(self.root))
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=5)
        return self.max_kib


def bench(darkroom: Path, url: str, args, extra: list[str], duration: float) -> dict:
    cmd = [str(darkroom), "bench", "--url", url, "--photos", str(args.photos),
           "--images-per-request", str(IMAGES_PER_REQUEST), "--warmup", "0", "--duration", f"{duration:g}",
           "--timeout", "30", "--expect-continue", "--json", *extra]
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=duration + 120)
    except subprocess.TimeoutExpired:
        raise Fail(f"`{' '.join(cmd)}` ran over {duration + 120:.0f} s")
    lines = [l for l in r.stdout.splitlines() if l.strip().startswith("{")]
    if not lines:
        raise Fail(f"`{' '.join(cmd)}` printed no JSON (status {r.returncode}):\n{(r.stderr or r.stdout)[-2000:]}")
    return json.loads(lines[-1])


def one_load(server: Server, darkroom: Path, args, label: str, extra: list[str]) -> dict:
    time.sleep(args.settle)
    server.check_alive()
    before = rss_kib(server.proc.pid)
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    say(f"{server.name}: {label}, {args.duration:g} s")
    try:
        result = bench(darkroom, server.url, args, extra, args.duration)
    finally:
        peak = sampler.stop()
    time.sleep(args.settle)
    server.check_alive()
    after = rss_kib(server.proc.pid)
    errors = result.get("request_errors") or {}
    scheduled = result.get("scheduled") or result.get("requests") or 0
    dropped = errors.get("client_overloaded", 0)
    refused = sum(n for code, n in errors.items()
                  if code in ("overloaded", "deadline_exceeded", "http_429", "http_503", "not_ready"))
    other = {c: n for c, n in errors.items()
             if c not in ("client_overloaded", "overloaded", "deadline_exceeded", "http_429", "http_503")}
    latency = result.get("latency_ms") or {}
    return {
        "label": label,
        "photos_per_s": result.get("photos_per_second") or 0.0,
        "p50_ms": latency.get("p50"),
        "p99_ms": latency.get("p99"),
        "scheduled": scheduled,
        "refused": refused / scheduled if scheduled else 0.0,
        "dropped": dropped / scheduled if scheduled else 0.0,
        "other_errors": other,
        "rss_before_mib": before / MIB,
        "rss_peak_mib": peak / MIB,
        "rss_after_mib": after / MIB,
        "bench": result,
    }


def run_contender(name: str, darkroom: Path, args, logdir: Path) -> dict:
    port = free_port()
    photo = first_photo(args.photos)
    if name == "darkroom":
        argv = [str(args.server or darkroom), "serve", "--home", str(args.home), "--listen", f"127.0.0.1:{port}", *args.serve_arg]
        server = Server(name, argv, port, logdir)
        ready = lambda: http("GET", f"{server.url}/readyz") == 200
    else:
        python = ensure_peer_venv(args.home)
        argv = [str(python), str(PEER_APP), "--home", str(args.home), "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(os.cpu_count() or 1), "--threads", "1"]
        server = Server(name, argv, port, logdir, env={**os.environ, **PEER_THREAD_CAPS})
        body = json.dumps({"images": [{"id": photo.name, "data": base64.b64encode(photo.read_bytes()).decode()}]}).encode()
        ready = lambda: (http("GET", f"{server.url}/healthz") == 200
                         and http("POST", f"{server.url}/v1/analyze", body, timeout=60) == 200)
    try:
        server.wait_ready(ready)
        say(f"{name}: warm-up, {args.warmup:g} s (not measured)")
        bench(darkroom, server.url, args, ["--concurrency", "8"], args.warmup)
        capacity = one_load(server, darkroom, args, "capacity: closed loop, 8 clients", ["--concurrency", "8"])
        photos_per_s = capacity["photos_per_s"]
        if photos_per_s <= 0:
            raise Fail(f"{name} analysed no photo in the capacity run: {capacity['bench']}")
        rows = []
        for factor in OPEN_LOADS:
            rate = factor * photos_per_s / IMAGES_PER_REQUEST
            row = one_load(server, darkroom, args, f"open loop {factor:g}× ({rate:.1f} req/s)",
                           ["--rate", f"{rate:.3f}", "--arrival", "poisson"])
            row["factor"] = factor
            rows.append(row)
        for clients in CLOSED_LOADS:
            row = one_load(server, darkroom, args, f"closed loop, {clients} clients", ["--concurrency", str(clients)])
            row["clients"] = clients
            rows.append(row)
        return {"capacity_photos_per_s": photos_per_s, "rows": rows}
    finally:
        server.stop()


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def targets(rows: list[dict]) -> list[tuple[str, str, bool | None]]:
    by = {r.get("factor"): r for r in rows if "factor" in r}
    one, ten = by.get(1.0), by.get(10.0)
    if not one or not ten:
        return []
    def ratio(a, b):
        return a / b if a is not None and b else None
    t = ratio(ten["photos_per_s"], one["photos_per_s"])
    p = ratio(ten["p99_ms"], one["p99_ms"])
    m = ratio(ten["rss_peak_mib"], one["rss_peak_mib"])
    a = ratio(ten["rss_after_mib"], ten["rss_before_mib"])
    return [
        ("throughput 10× / 1× (≥ 0.95)", fmt(t, 2), t is not None and t >= 0.95),
        ("p99 10× / 1× (≤ 2)", fmt(p, 2), p is not None and p <= 2.0),
        ("peak RSS 10× / 1× (≤ 1.25)", fmt(m, 2), m is not None and m <= 1.25),
        (f"RSS after / before the 10× burst (within ±10 %)", fmt(a, 2), a is not None and 0.9 <= a <= 1.1),
    ]


def render(results: dict[str, dict], markdown: bool) -> str:
    out = []
    for name, res in results.items():
        header = ["load", "photos/s", "p50 ms", "p99 ms", "refused", "dropped by client",
                  "RSS before MiB", "peak RSS MiB", "RSS after MiB"]
        rows = []
        for r in res["rows"]:
            rows.append([r["label"], fmt(r["photos_per_s"]), fmt(r["p50_ms"], 0), fmt(r["p99_ms"], 0),
                         f"{100 * r['refused']:.0f} %", f"{100 * r['dropped']:.0f} %",
                         fmt(r["rss_before_mib"], 0), fmt(r["rss_peak_mib"], 0), fmt(r["rss_after_mib"], 0)])
        out.append(f"{name}: capacity {res['capacity_photos_per_s']:.1f} photos/s (closed loop, 8 clients)")
        out.append(table(header, rows, markdown))
        checks = targets(res["rows"])
        if checks:
            out.append(table(["target", name, "met"],
                             [[n, v, "yes" if ok else "no"] for n, v, ok in checks], markdown))
        others = {r["label"]: r["other_errors"] for r in res["rows"] if r["other_errors"]}
        if others:
            out.append(f"other errors: {others}")
        out.append("")
    return "\n".join(out)


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths))]
    lines += ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)) for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DARKROOM_HOME", "var")))
    p.add_argument("--photos", type=Path, help="photos sent (default: HOME/photos/camera, Elephants included)")
    p.add_argument("--contenders", default=",".join(CONTENDERS), help="comma-separated: darkroom, peer")
    p.add_argument("--duration", type=float, default=20, help="seconds of each load (default 20)")
    p.add_argument("--settle", type=float, default=10, help="idle seconds before and after each load (default 10)")
    p.add_argument("--warmup", type=float, default=5, help="unmeasured seconds of load first (default 5)")
    p.add_argument("--darkroom", type=Path, default=ROOT / "target/release/darkroom")
    p.add_argument("--server", type=Path,
                   help="the darkroom binary that serves (default: --darkroom; the load tool is always --darkroom)")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `darkroom serve` (repeatable)")
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = p.parse_args(argv)
    args.home = args.home if args.home.is_absolute() else Path.cwd() / args.home
    args.photos = args.photos or args.home / "photos/camera"
    darkroom = args.darkroom if args.darkroom.is_absolute() else Path.cwd() / args.darkroom
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    if not contenders or any(c not in CONTENDERS for c in contenders):
        raise Fail(f"--contenders: from {', '.join(CONTENDERS)}")
    if not darkroom.is_file():
        raise Fail(f"{darkroom} not found: run ./scripts/setup.sh first")
    if not args.photos.is_dir():
        raise Fail(f"{args.photos} not found: run ./scripts/setup.sh first (it fetches the camera photos)")
    r = subprocess.run([str(darkroom), "bench", "--help"], capture_output=True, text=True, timeout=30)
    if "--expect-continue" not in r.stdout:
        raise Fail(f"{darkroom} bench has no --expect-continue: rebuild it")
    logdir = Path(tempfile.mkdtemp(prefix="darkroom-overload-"))
    results = {}
    for name in contenders:
        results[name] = run_contender(name, darkroom, args, logdir)
    print()
    print(f"machine: {machine()}")
    print(f"load: {IMAGES_PER_REQUEST} photos per request from {args.photos}, {args.duration:g} s each, "
          f"{args.settle:g} s idle before and after; Expect: 100-continue; RSS of the server's process tree")
    print()
    print(render(results, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "results": results}, indent=2) + "\n")
    return 0


def _sigterm(_signum, _frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        sys.exit(main())
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        sys.exit(130)
