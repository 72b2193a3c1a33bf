#!/usr/bin/env python3
"""Darkroom against its Python peer, side by side, under the same load.

    python3 bench/compare.py [--home var] [--photos var/photos/camera]
        [--concurrency 8] [--images-per-request 4] [--duration 20] [--warmup 3]
        [--darkroom target/release/darkroom] [--only darkroom|peer] [--markdown]

For each server in turn (Darkroom's `darkroom serve`, then `bench/peer/app.py`
in `var/peer-venv`), alone on the machine:

1. start it on a free local port and wait until it is ready
   (Darkroom: `GET /readyz` 200; peer: `GET /healthz` 200 and one analyze POST);
2. warm it up with a short, unmeasured run of the load tool
   (`darkroom bench --duration WARMUP --warmup 0`);
3. sample the CPU time of the server's whole process tree, run the measured
   load (`darkroom bench --duration DURATION --warmup 0 --json`), sample again;
   the summed resident memory of the tree is sampled every 200 ms meanwhile;
4. read each process's peak RSS (VmHWM), stop the server (SIGTERM, 30 s, then SIGKILL).

Then prints one table: throughput, latency, CPU seconds per photo, peak RSS,
errors and mean batch size, with the ratio Darkroom / peer. Standard library
only; the peer's venv is created (pip, hash-pinned) when missing.
"""

from __future__ import annotations

import argparse
import base64
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PEER_APP = ROOT / "bench/peer/app.py"
PEER_REQUIREMENTS = ROOT / "bench/peer/requirements.txt"
READY_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
PIP_TIMEOUT_S = 900.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KIB = 1024


class Fail(Exception):
    """An error to print without a traceback."""


def say(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Process tree accounting (/proc)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def process_tree(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is None:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def cpu_seconds(root: int) -> float:
    """utime + stime of the tree, plus the reaped children's (cutime + cstime),
    so a worker that exits mid-run is still counted."""
    total = 0
    for pid in process_tree(root):
        fields = _stat_fields(pid)
        if fields:
            # After the name: state=0, ppid=1, ... utime=11, stime=12, cutime=13, cstime=14.
            total += sum(int(fields[i]) for i in (11, 12, 13, 14))
    return total / CLK_TCK


def status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_kib(root: int, key: str) -> int:
    return sum(status_kib(pid, key) for pid in process_tree(root))


class RssSampler(threading.Thread):
    """Max over time of the tree's summed VmRSS, every `period` seconds."""

    def __init__(self, root: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.max_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.max_kib = max(self.max_kib, tree_kib(self.root, "VmRSS"))
            self._halt.wait(self.period)

    def stop(self) -> int:
        self._halt.set()
        self.join(timeout=5)
        return self.max_kib


# --------------------------------------------------------------------------
# Servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: bytes | None = None, timeout: float = 5.0) -> int:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return 0


def stop_process(proc: subprocess.Popen, name: str) -> None:
    """SIGTERM, up to STOP_TIMEOUT_S to exit, then SIGKILL to whatever is left of
    its session (workers orphaned by a crash, say); the process was started with
    start_new_session=True."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            say(f"{name} ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s: killing it")
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + l for l in text[-lines:]) or "    (empty log)"


class Server:
    """A server process in its own session (so its whole tree can be signalled)."""

    def __init__(self, name: str, argv: list[str], port: int, logdir: Path, env: dict | None = None):
        self.name, self.argv, self.port = name, argv, port
        self.url = f"http://127.0.0.1:{port}"
        self.log = logdir / f"{name}.log"
        self._log_file = open(self.log, "wb")
        say(f"starting {name}: {' '.join(argv)}")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise Fail(f"{self.name} exited with status {self.proc.returncode}; its log ({self.log}):\n{log_tail(self.log)}")

    def wait_ready(self, ready) -> float:
        start = time.monotonic()
        while True:
            self.check_alive()
            if ready():
                return time.monotonic() - start
            if time.monotonic() - start > READY_TIMEOUT_S:
                raise Fail(f"{self.name} not ready after {READY_TIMEOUT_S:.0f} s; its log ({self.log}):\n{log_tail(self.log)}")
            time.sleep(0.25)

    def stop(self) -> None:
        stop_process(self.proc, self.name)
        self._log_file.close()


# --------------------------------------------------------------------------
# The peer's venv


def python311() -> str:
    for cand in ("python3.11",):
        path = shutil.which(cand)
        if path:
            return path
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    raise Fail("python3.11 not found: the peer's pinned wheels are for CPython 3.11")


def ensure_peer_venv(home: Path) -> Path:
    venv = home / "peer-venv"
    python = venv / "bin/python"
    stamp = venv / ".requirements.sha256"
    want = hashlib.sha256(PEER_REQUIREMENTS.read_bytes()).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text().strip() == want:
        return python
    if not python.exists():
        say(f"creating the peer's venv {venv}")
        r = subprocess.run([python311(), "-m", "venv", str(venv)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Fail(f"python3.11 -m venv {venv} failed:\n{r.stderr.strip()}")
    say(f"installing {PEER_REQUIREMENTS.relative_to(ROOT)} into {venv} (hash-pinned wheels from PyPI)")
    cmd = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--require-hashes", "--only-binary=:all:", "-r", str(PEER_REQUIREMENTS)]
    cache = home / "cache/downloads"
    if cache.is_dir():
        # setup.sh already downloaded the onnxruntime wheel: reuse it (the hash still applies).
        cmd[4:4] = ["--find-links", str(cache)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise Fail(f"pip install timed out after {PIP_TIMEOUT_S:.0f} s: is PyPI reachable?")
    if r.returncode != 0:
        out = (r.stdout + r.stderr).strip()
        offline = any(s in out for s in ("NewConnectionError", "Temporary failure in name resolution",
                                           "Network is unreachable", "No matching distribution",
                                           "Could not find a version", "ConnectTimeout", "ReadTimeout"))
        hint = "PyPI looks unreachable from here: the peer's venv needs it once" if offline else "pip failed"
        tail = "\n".join("    " + l for l in out.splitlines()[-15:])
        raise Fail(f"{hint} ({' '.join(cmd)}):\n{tail}")
    stamp.write_text(want + "\n")
    return python


# --------------------------------------------------------------------------
# Load


def run_bench(darkroom: Path, url: str, args, duration: float, as_json: bool) -> dict | None:
    cmd = [str(darkroom), "bench", "--url", url, "--photos", str(args.photos),
           "--concurrency", str(args.concurrency), "--images-per-request", str(args.images_per_request),
           "--duration", f"{duration:g}", "--warmup", "0"]
    if as_json:
        cmd.append("--json")
    limit = duration + 120
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        raise Fail(f"`{' '.join(cmd)}` ran over {limit:.0f} s")
    if r.returncode != 0:
        raise Fail(f"`{' '.join(cmd)}` failed (status {r.returncode}):\n{(r.stderr or r.stdout).strip()[-3000:]}")
    if not as_json:
        return None
    text = r.stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        for line in reversed(text.splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    continue
    raise Fail(f"`{' '.join(cmd)}` printed no JSON object:\n{text[-2000:]}")


def first_photo(photos: Path) -> Path:
    for p in sorted(photos.iterdir()):
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"):
            return p
    raise Fail(f"no .jpg/.jpeg/.png/.webp photos in {photos}")


def measure(server: Server, ready, darkroom: Path, args) -> dict:
    ready_s = server.wait_ready(ready)
    say(f"{server.name} ready after {ready_s:.1f} s on {server.url}")
    if args.warmup > 0:
        say(f"{server.name}: warm-up, {args.warmup:g} s (not measured)")
        run_bench(darkroom, server.url, args, args.warmup, as_json=False)
    server.check_alive()
    sampler = RssSampler(server.proc.pid)
    sampler.start()
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    say(f"{server.name}: measured run, {args.duration:g} s")
    try:
        result = run_bench(darkroom, server.url, args, args.duration, as_json=True)
    finally:
        cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
        max_rss_kib = sampler.stop()
    hwm_kib = tree_kib(server.proc.pid, "VmHWM")
    server.check_alive()
    photos = result.get("photos") or 0
    cpu = cpu1 - cpu0
    return {
        "bench": result,
        "ready_s": ready_s,
        "wall_s": t1 - t0,
        "cpu_s": cpu,
        "cpu_s_per_photo": cpu / photos if photos else None,
        "cpu_cores_busy": cpu / (t1 - t0) if t1 > t0 else None,
        "peak_rss_mib": max(max_rss_kib, hwm_kib) / 1024,
        "max_summed_rss_mib": max_rss_kib / 1024,
        "summed_hwm_mib": hwm_kib / 1024,
    }


def run_darkroom(darkroom: Path, args, logdir: Path) -> dict:
    port = free_port()
    argv = [str(darkroom), "serve", "--home", str(args.home), "--listen", f"127.0.0.1:{port}", *args.serve_arg]
    server = Server("darkroom", argv, port, logdir)
    try:
        ready = lambda: http("GET", f"{server.url}/readyz") == 200
        return measure(server, ready, darkroom, args)
    finally:
        server.stop()


def run_peer(darkroom: Path, args, logdir: Path) -> dict:
    python = ensure_peer_venv(args.home)
    port = free_port()
    argv = [str(python), str(PEER_APP), "--home", str(args.home), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(args.peer_workers), "--threads", str(args.peer_threads)]
    if args.peer_draft:
        argv.append("--draft")
    server = Server("peer", argv, port, logdir)
    photo = first_photo(args.photos)
    body = json.dumps({"images": [{"id": photo.name, "data": base64.b64encode(photo.read_bytes()).decode()}]}).encode()

    def ready() -> bool:
        return (http("GET", f"{server.url}/healthz") == 200
                and http("POST", f"{server.url}/v1/analyze", body, timeout=60) == 200)

    try:
        return measure(server, ready, darkroom, args)
    finally:
        server.stop()


# --------------------------------------------------------------------------
# Report


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, int):
        return str(v)
    return f"{v:.{digits}f}"


def rows_for(results: dict, args) -> list[tuple[str, dict, str, int]]:
    """(label, {server: value}, better, digits)."""

    def get(name, *path):
        v = results.get(name)
        for key in path:
            if not isinstance(v, dict):
                return None
            v = v.get(key)
        return v

    names = list(results)
    rows = [
        ("throughput (photos/s)", {n: get(n, "bench", "photos_per_second") for n in names}, "higher", 2),
        ("requests/s", {n: get(n, "bench", "requests_per_second") for n in names}, "higher", 2),
        ("latency p50 (ms)", {n: get(n, "bench", "latency_ms", "p50") for n in names}, "lower", 1),
        ("latency p95 (ms)", {n: get(n, "bench", "latency_ms", "p95") for n in names}, "lower", 1),
        ("latency p99 (ms)", {n: get(n, "bench", "latency_ms", "p99") for n in names}, "lower", 1),
        ("CPU s per photo", {n: get(n, "cpu_s_per_photo") for n in names}, "lower", 4),
        ("CPU cores busy", {n: get(n, "cpu_cores_busy") for n in names}, "", 2),
        ("peak RSS (MiB)", {n: get(n, "peak_rss_mib") for n in names}, "lower", 0),
        ("photos analysed", {n: get(n, "bench", "photos") for n in names}, "", 0),
    ]
    errors = {}
    for n in names:
        e = get(n, "bench", "errors")
        if isinstance(e, dict):
            total = sum(int(c) for c in e.values())
            errors[n] = f"{total}" + (" (" + ", ".join(f"{k} {c}" for k, c in sorted(e.items())) + ")" if total else "")
        else:
            errors[n] = e
    rows.append(("errors", errors, "", 0))
    models: list[str] = []
    for n in names:
        mb = get(n, "bench", "mean_batch_size")
        if isinstance(mb, dict):
            models += [m for m in mb if m not in models]
    for m in models:
        vals = {}
        for n in names:
            mb = get(n, "bench", "mean_batch_size")
            if isinstance(mb, dict) and m in mb:
                vals[n] = mb[m]
            elif n == "peer":
                # The peer runs each request's images as one batch, by construction.
                vals[n] = f"{args.images_per_request} (= per request)"
        rows.append((f"mean batch: {m}", vals, "", 1))
    if not models:
        vals = {n: f"{args.images_per_request} (= per request)" if n == "peer" else None for n in names}
        rows.append(("mean batch size", vals, "", 1))
    return rows


def render(results: dict, args, markdown: bool) -> str:
    names = list(results)
    both = "darkroom" in results and "peer" in results
    header = ["metric", *names] + (["darkroom / peer"] if both else [])
    table = []
    for label, vals, better, digits in rows_for(results, args):
        row = [label] + [fmt(vals.get(n), digits) for n in names]
        if both:
            a, b = vals.get("darkroom"), vals.get("peer")
            if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b and better:
                row.append(f"{a / b:.2f}× ({better} is better)")
            else:
                row.append("")
        table.append(row)
    if markdown:
        out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in table]
        return "\n".join(out)
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, table)])


def machine() -> str:
    cores = os.cpu_count() or 0
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = cores
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{usable} cores usable ({cores} online){', ' + model if model else ''}"


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DARKROOM_HOME", "var")))
    p.add_argument("--photos", type=Path, help="photos the load tool sends (default: HOME/photos/camera)")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out photos whose name matches, e.g. --exclude 'Elephants*' (repeatable)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--images-per-request", type=int, default=4)
    p.add_argument("--duration", type=float, default=20, help="measured seconds per server")
    p.add_argument("--warmup", type=float, default=3, help="unmeasured seconds of load first")
    p.add_argument("--darkroom", type=Path, default=ROOT / "target/release/darkroom")
    p.add_argument("--only", choices=["darkroom", "peer"])
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    p.add_argument("--peer-workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers (default: CPU count)")
    p.add_argument("--peer-threads", type=int, default=1, help="ONNX Runtime intra-op threads per session in the peer")
    p.add_argument("--peer-draft", action="store_true", help="peer decodes JPEGs with Image.draft")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `darkroom serve`, e.g. --serve-arg=--threads=2 (repeatable)")
    args = p.parse_args(argv)

    args.home = args.home if args.home.is_absolute() else (Path.cwd() / args.home)
    args.photos = args.photos or args.home / "photos/camera"
    darkroom = args.darkroom if args.darkroom.is_absolute() else Path.cwd() / args.darkroom
    if min(args.concurrency, args.images_per_request) < 1 or args.duration <= 0 or args.warmup < 0:
        raise Fail("--concurrency and --images-per-request must be at least 1, --duration positive")
    if not darkroom.is_file() or not os.access(darkroom, os.X_OK):
        raise Fail(f"{darkroom} not found: run ./scripts/setup.sh first (it builds target/release/darkroom)")
    if not (args.home / "models").is_dir():
        raise Fail(f"{args.home / 'models'} not found: run ./scripts/setup.sh first")
    if not args.photos.is_dir():
        raise Fail(f"{args.photos} not found: run ./scripts/setup.sh first (it fetches the camera photos)")
    first_photo(args.photos)
    logdir = Path(tempfile.mkdtemp(prefix="darkroom-compare-"))
    if args.exclude:
        # The load tool sends every photo in a folder: link the kept ones into one.
        kept = logdir / "photos"
        kept.mkdir()
        for photo in sorted(args.photos.iterdir()):
            if photo.is_file() and not any(fnmatch.fnmatch(photo.name, g) for g in args.exclude):
                (kept / photo.name).symlink_to(photo.resolve())
        args.photos = kept
        first_photo(args.photos)
    r = subprocess.run([str(darkroom), "bench", "--help"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise Fail(f"{darkroom} has no working `bench` command (the load tool); rebuild it:\n{r.stderr.strip()[-1000:]}")
    if args.only != "peer":
        r = subprocess.run([str(darkroom), "serve", "--help"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Fail(f"{darkroom} has no working `serve` command; rebuild it:\n{r.stderr.strip()[-1000:]}")

    servers = ["darkroom", "peer"] if args.only is None else [args.only]
    results: dict[str, dict] = {}
    for name in servers:
        runner = run_darkroom if name == "darkroom" else run_peer
        results[name] = runner(darkroom, args, logdir)

    print()
    print(f"machine: {machine()}")
    print(f"load: {args.concurrency} requests in flight, {args.images_per_request} photos per request, "
          f"{args.duration:g} s measured after {args.warmup:g} s warm-up, photos from {args.photos}")
    print(f"peer: {args.peer_workers} uvicorn workers, {args.peer_threads} ONNX Runtime thread(s) per session, "
          f"draft {'on' if args.peer_draft else 'off'}")
    print("CPU and RSS: the server's whole process tree; the load tool runs on the same machine and is not counted.")
    print()
    print(render(results, args, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=2) + "\n")
    shutil.rmtree(logdir, ignore_errors=True)
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
