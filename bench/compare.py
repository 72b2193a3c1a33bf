#!/usr/bin/env python3
"""Darkroom against its Python peer, side by side, under the same load, each
at its best and compared like with like.

    python3 bench/compare.py [--home var] [--photos var/photos/camera]
        [--contenders darkroom-exact,peer,darkroom-fast,peer-draft] [--trials 3]
        [--concurrency 8] [--images-per-request 4] [--requests 160] [--warmup 5]
        [--darkroom target/release/darkroom] [--markdown] [--json FILE]

Four contenders: `darkroom serve` decoding exactly as the models were trained
(`darkroom-exact`) and with shrink-on-load and SIMD resizing
(`darkroom-fast`), and `bench/peer/app.py` (FastAPI, Pillow, ONNX Runtime,
OpenCV) without and with Pillow's `Image.draft` (`peer`, `peer-draft`). Exact
is compared with exact, fast with draft.

Each trial runs every contender once, interleaved (D, P, D, P), and there are
`--trials` of them (3 by default); the table gives the median and the range.
For each run, alone on the machine:

1. start the server on a free local port and wait until it is ready
   (Darkroom: `GET /readyz` 200; peer: `GET /healthz` 200 and one analyze POST);
2. warm it up with an unmeasured run of the load tool (`--warmup` seconds);
3. sample the CPU time of the server's whole process tree, run a fixed
   number of requests (`darkroom bench --requests N`), sample again; the
   tree's summed PSS (proportional set size: shared libraries counted once
   across the peer's worker processes) is sampled every 200 ms meanwhile,
   all processes at the same moment, and the peak of that sum is reported;
4. stop the server (SIGTERM, 30 s, then SIGKILL).

The peer runs one uvicorn worker per core with one ONNX Runtime thread
each, and its numeric libraries capped at one thread per worker
(OMP/OpenBLAS/MKL, `cv2.setNumThreads(1)`), so no pool spins beside ONNX
Runtime. Standard library only; the peer's venv is created (pip,
hash-pinned) when missing.
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


def pss_kib(pid: int) -> int:
    """The process's proportional set size (its private pages plus its share
    of pages it shares), from smaps_rollup; 0 for a process gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class PssSampler(threading.Thread):
    """The peak over time of the tree's summed PSS, every `period` seconds:
    each sample reads every process of the tree at one moment."""

    def __init__(self, root: int, period: float = 0.2):
        super().__init__(daemon=True)
        self.root, self.period = root, period
        self.max_kib = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = sum(pss_kib(pid) for pid in process_tree(self.root))
            self.max_kib = max(self.max_kib, total)
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


def run_bench(darkroom: Path, url: str, args, as_json: bool, duration: float | None = None,
              requests: int | None = None) -> dict | None:
    """One run of the load tool: `duration` seconds or `requests` requests."""
    cmd = [str(darkroom), "bench", "--url", url, "--photos", str(args.photos),
           "--concurrency", str(args.concurrency), "--images-per-request", str(args.images_per_request),
           "--warmup", "0"]
    if requests is not None:
        cmd += ["--requests", str(requests)]
        limit = 900.0
    else:
        cmd += ["--duration", f"{duration:g}"]
        limit = duration + 120
    if as_json:
        cmd.append("--json")
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
        run_bench(darkroom, server.url, args, as_json=False, duration=args.warmup)
    server.check_alive()
    sampler = PssSampler(server.proc.pid)
    sampler.start()
    cpu0, t0 = cpu_seconds(server.proc.pid), time.monotonic()
    say(f"{server.name}: measured run, {args.requests} requests")
    try:
        result = run_bench(darkroom, server.url, args, as_json=True, requests=args.requests)
    finally:
        cpu1, t1 = cpu_seconds(server.proc.pid), time.monotonic()
        max_pss_kib = sampler.stop()
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
        "peak_pss_mib": max_pss_kib / 1024,
    }


def run_darkroom(name: str, darkroom: Path, args, logdir: Path) -> dict:
    port = free_port()
    decode = "fast" if name == "darkroom-fast" else "model"
    argv = [str(darkroom), "serve", "--home", str(args.home), "--listen", f"127.0.0.1:{port}",
            "--decode", decode, *args.serve_arg]
    server = Server(name, argv, port, logdir)
    try:
        ready = lambda: http("GET", f"{server.url}/readyz") == 200
        return measure(server, ready, darkroom, args)
    finally:
        server.stop()


# One thread per worker for every numeric library the peer's stack may load:
# otherwise OpenBLAS's and OpenCV's pools spin beside ONNX Runtime.
PEER_THREAD_CAPS = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "NUMEXPR_NUM_THREADS": "1", "VECLIB_MAXIMUM_THREADS": "1"}


def run_peer(name: str, darkroom: Path, args, logdir: Path) -> dict:
    python = ensure_peer_venv(args.home)
    port = free_port()
    argv = [str(python), str(PEER_APP), "--home", str(args.home), "--host", "127.0.0.1", "--port", str(port),
            "--workers", str(args.peer_workers), "--threads", str(args.peer_threads)]
    if name == "peer-draft":
        argv.append("--draft")
    server = Server(name, argv, port, logdir, env={**os.environ, **PEER_THREAD_CAPS})
    photo = first_photo(args.photos)
    body = json.dumps({"images": [{"id": photo.name, "data": base64.b64encode(photo.read_bytes()).decode()}]}).encode()

    def ready() -> bool:
        return (http("GET", f"{server.url}/healthz") == 200
                and http("POST", f"{server.url}/v1/analyze", body, timeout=60) == 200)

    try:
        return measure(server, ready, darkroom, args)
    finally:
        server.stop()


CONTENDERS = ["darkroom-exact", "peer", "darkroom-fast", "peer-draft"]
# Like with like: Darkroom's exact decoding against the peer's full decode,
# its shrink-on-load against Pillow's draft.
PAIRS = [("darkroom-exact", "peer"), ("darkroom-fast", "peer-draft")]


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


def median(values: list[float]) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# (label, how to read it from one run, better, digits)
METRICS = [
    ("throughput (photos/s)", lambda r: r["bench"].get("photos_per_second"), "higher", 1),
    ("latency p50 (ms)", lambda r: (r["bench"].get("latency_ms") or {}).get("p50"), "lower", 0),
    ("latency p99 (ms)", lambda r: (r["bench"].get("latency_ms") or {}).get("p99"), "lower", 0),
    ("CPU s per photo", lambda r: r.get("cpu_s_per_photo"), "lower", 4),
    ("peak PSS (MiB)", lambda r: r.get("peak_pss_mib"), "lower", 0),
    ("errors", lambda r: sum(int(c) for c in (r["bench"].get("errors") or {}).values()), "", 0),
]


def summary(results: dict[str, list[dict]]) -> dict[str, dict[str, dict]]:
    """{contender: {metric: {median, min, max, runs}}}."""
    out: dict[str, dict[str, dict]] = {}
    for name, runs in results.items():
        out[name] = {}
        for label, read, _, _ in METRICS:
            values = [read(r) for r in runs]
            values = [v for v in values if v is not None]
            out[name][label] = {"median": median(values), "min": min(values, default=None),
                                "max": max(values, default=None), "runs": values}
    return out


def render(results: dict[str, list[dict]], args, markdown: bool) -> str:
    stats = summary(results)
    names = [n for n in CONTENDERS if n in results]
    header = ["metric", *names]
    table = []
    for label, _, _, digits in METRICS:
        row = [label]
        for n in names:
            m = stats[n][label]
            cell = fmt(m["median"], digits)
            if m["min"] is not None and m["max"] is not None and m["max"] != m["min"]:
                cell += f" [{fmt(m['min'], digits)}–{fmt(m['max'], digits)}]"
            row.append(cell)
        table.append(row)
    pairs = [(a, b) for a, b in PAIRS if a in stats and b in stats]
    ratio_header = ["ratio of medians", *(f"{a} / {b}" for a, b in pairs)]
    ratios = []
    for label, _, better, _ in METRICS:
        if not better:
            continue
        row = [f"{label} ({better} is better)"]
        for a, b in pairs:
            x, y = stats[a][label]["median"], stats[b][label]["median"]
            row.append(f"{x / y:.2f}×" if x is not None and y else "–")
        ratios.append(row)
    tables = [(header, table)] + ([(ratio_header, ratios)] if pairs else [])
    out = []
    for head, rows in tables:
        if markdown:
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|")
            out += ["| " + " | ".join(r) + " |" for r in rows]
        else:
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            out += [line(head), "  ".join("-" * w for w in widths), *map(line, rows)]
        out.append("")
    return "\n".join(out).rstrip()


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
    p.add_argument("--contenders", default=",".join(CONTENDERS),
                   help=f"comma-separated, from {', '.join(CONTENDERS)} (default: all four)")
    p.add_argument("--trials", type=int, default=3, help="runs of each contender, interleaved (default 3)")
    p.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    p.add_argument("--images-per-request", type=int, default=4)
    p.add_argument("--requests", type=int, default=160, help="measured requests per run (default 160)")
    p.add_argument("--warmup", type=float, default=5, help="unmeasured seconds of load first (default 5)")
    p.add_argument("--darkroom", type=Path, default=ROOT / "target/release/darkroom")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    p.add_argument("--peer-workers", type=int, default=os.cpu_count() or 1, help="uvicorn workers (default: CPU count)")
    p.add_argument("--peer-threads", type=int, default=1, help="ONNX Runtime intra-op threads per session in the peer")
    p.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra argument for `darkroom serve`, e.g. --serve-arg=--intra-threads=2 (repeatable)")
    args = p.parse_args(argv)

    args.home = args.home if args.home.is_absolute() else (Path.cwd() / args.home)
    args.photos = args.photos or args.home / "photos/camera"
    darkroom = args.darkroom if args.darkroom.is_absolute() else Path.cwd() / args.darkroom
    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in CONTENDERS]
    if unknown or not contenders:
        raise Fail(f"--contenders: unknown {unknown} (known: {', '.join(CONTENDERS)})")
    if min(args.concurrency, args.images_per_request, args.requests, args.trials) < 1 or args.warmup < 0:
        raise Fail("--concurrency, --images-per-request, --requests and --trials must be at least 1")
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
    if any(c.startswith("darkroom") for c in contenders):
        r = subprocess.run([str(darkroom), "serve", "--help"], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            raise Fail(f"{darkroom} has no working `serve` command; rebuild it:\n{r.stderr.strip()[-1000:]}")

    order = [c for c in CONTENDERS if c in contenders]
    results: dict[str, list[dict]] = {c: [] for c in order}
    for trial in range(1, args.trials + 1):
        for name in order:
            say(f"trial {trial}/{args.trials}: {name}")
            runner = run_darkroom if name.startswith("darkroom") else run_peer
            results[name].append(runner(name, darkroom, args, logdir))

    print()
    print(f"machine: {machine()}")
    print(f"load: {args.concurrency} requests in flight, {args.images_per_request} photos per request, "
          f"{args.requests} requests measured after {args.warmup:g} s warm-up, photos from {args.photos}")
    print(f"peer: {args.peer_workers} uvicorn workers, {args.peer_threads} ONNX Runtime thread(s) per session, "
          f"numeric libraries at 1 thread per worker")
    print(f"{args.trials} trials per contender, interleaved; median [min–max]. CPU and PSS: the server's "
          "whole process tree (PSS summed at one moment); the load tool runs on the same machine and is not counted.")
    print()
    print(render(results, args, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results, "summary": summary(results)}, indent=2) + "\n")
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
