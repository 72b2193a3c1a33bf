#!/usr/bin/env python3
"""Thumbnails: Darkroom against vipsthumbnail and Pillow, for speed, memory and fidelity.

    python3 bench/thumbnails.py [--sizes 256,1024] [--sets camera,12mp]
        [--only darkroom,http,vips,pillow] [--repeat 3] [--home var] [--markdown]

Photo sets:
  camera  the Debian mate-backgrounds camera JPEGs in HOME/photos/camera, less the
          18 MP Elephants_5640x3172.jpg (12 photos, ~3 MP);
  12mp    three 4000x3000 crops (left / centre / right) of Elephants_5640x3172.jpg,
          re-encoded by Pillow as baseline JPEG q92; made once, cached in
          HOME/bench/photos-12mp/.
Each output fits a W x W box keeping the aspect ("contain"), JPEG quality 85.

Contenders:
  darkroom  `darkroom thumbnails --fit contain --format jpeg --quality 85 --jobs N`;
            the whole process is timed, nothing subtracted;
  http      `darkroom serve` with thumbnails.cache=false (every GET renders): each photo
            uploaded once (POST /v1/photos), then GET /v1/photos/{id}/thumbnail from
            Python client threads with keep-alive connections;
  vips      `vipsthumbnail -s WxW -o OUT/%s.jpg[Q=85]`, VIPS_CONCURRENCY=1 per process;
            whole processes timed; all cores = one process per core over a split of the files;
  pillow    Image.draft + ImageOps.exif_transpose + Image.thumbnail(LANCZOS) + save(q85)
            in HOME/peer-venv; timed in-process (as a service would run it), all cores =
            multiprocessing.Pool(cores), started and warmed before the clock.

Every timed run renders the set repeated until it has at least --min-run photos (the
copies are hard links, or the same ids again over HTTP) so that start-up is amortised
and all cores stay busy; one untimed run first warms the page cache; best of --repeat.

Columns: ms per photo on one thread (wall / photos); CPU ms per photo (user + system,
so a "one thread" run that uses more shows it); photos/s on all cores; peak RSS
(ru_maxrss of each process from wait4, summed over parallel processes; Pillow: VmHWM of
the main process and of each pool worker; the server: VmHWM, reset through
/proc/PID/clear_refs before each run, so it includes the loaded models); fidelity: mean
(and minimum) PSNR in dB, 8-bit RGB, of the outputs against two references of the full
decode (no draft, exif_transpose) resized to exactly the output's size: Pillow's LANCZOS,
and a float64 Lanczos-3 of this script's own (so that no contender's kernel is the only
yardstick). The ceiling row is Pillow's reference through a Pillow JPEG q85 round trip.
vipsthumbnail gets at least 48 photos per process, so its start-up is amortised.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Shared with the service comparison (same folder, stdlib only): process
# accounting, ports, HTTP probes, the machine line and the peer's venv.
from compare import Fail, ensure_peer_venv, free_port, http, machine, say, status_kib, stop_process  # noqa: E402
ELEPHANTS = "Elephants_5640x3172.jpg"
CROP_W, CROP_H, CROP_QUALITY = 4000, 3000, 92
CROPS = ("left", "centre", "right")
QUALITY = 85
READY_TIMEOUT_S = 180.0
HTTP_TIMEOUT_S = 120.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
CONTENDERS = ("darkroom", "http", "vips", "pillow")
LABELS = {
    "darkroom": "darkroom (library, CLI)",
    "http": "darkroom (HTTP, no cache)",
    "vips": "vipsthumbnail",
    "pillow": "Pillow (draft + thumbnail)",
}


# ==========================================================================
# Helpers that run inside the venv (Pillow, numpy): `python thumbnails.py _helper KIND SPEC.json`.
# They print one JSON object on their last stdout line.


def _h_make12mp(spec: dict) -> dict:
    from PIL import Image

    src, outdir = Path(spec["src"]), Path(spec["outdir"])
    outdir.mkdir(parents=True, exist_ok=True)
    made = []
    with Image.open(src) as im:
        im.load()
        rgb = im.convert("RGB")
    w, h = rgb.size
    if w < CROP_W or h < CROP_H:
        raise SystemExit(f"{src} is {w}x{h}, smaller than {CROP_W}x{CROP_H}")
    top = (h - CROP_H) // 2
    lefts = {"left": 0, "centre": (w - CROP_W) // 2, "right": w - CROP_W}
    for name in CROPS:
        out = outdir / f"Elephants-{CROP_W}x{CROP_H}-{name}.jpg"
        tmp = out.with_name("." + out.name + ".tmp")
        crop = rgb.crop((lefts[name], top, lefts[name] + CROP_W, top + CROP_H))
        crop.save(tmp, "JPEG", quality=CROP_QUALITY, progressive=False, optimize=False)
        os.replace(tmp, out)
        made.append(str(out))
    return {"made": made}


def _pillow_render(job: tuple[str, str, int]) -> None:
    from PIL import Image, ImageOps

    src, out, w = job
    with Image.open(src) as im:
        im.draft("RGB", (w, w))
        im = ImageOps.exif_transpose(im)
        im.thumbnail((w, w), Image.LANCZOS)
        im.convert("RGB").save(out, "JPEG", quality=QUALITY)


def _noop(_x: int) -> int:
    return os.getpid()


def _h_pillow(spec: dict) -> dict:
    import multiprocessing

    import PIL
    from PIL import Image, ImageOps  # noqa: F401  (imported before forking, as a service would have)

    w, procs = int(spec["width"]), int(spec["procs"])
    jobs = [(src, out, w) for src, out in spec["jobs"]]
    if procs <= 1:
        c0, t0 = time.process_time(), time.perf_counter()
        for job in jobs:
            _pillow_render(job)
        t1, c1 = time.perf_counter(), time.process_time()
        return {"wall_s": t1 - t0, "cpu_s": c1 - c0, "rss_kib": status_kib("self", "VmHWM"),
                "processes": 1, "pillow": PIL.__version__}
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(procs) as pool:
        pool.map(_noop, range(procs * 4), chunksize=1)  # every worker up before the clock
        workers = [p.pid for p in pool._pool]  # noqa: SLF001
        cpu0 = sum(_proc_cpu_s(pid) for pid in [os.getpid(), *workers])
        t0 = time.perf_counter()
        pool.map(_pillow_render, jobs, chunksize=1)
        t1 = time.perf_counter()
        cpu1 = sum(_proc_cpu_s(pid) for pid in [os.getpid(), *workers])
        rss = status_kib("self", "VmHWM") + sum(status_kib(pid, "VmHWM") for pid in workers)
    return {"wall_s": t1 - t0, "cpu_s": cpu1 - cpu0, "rss_kib": rss, "processes": procs + 1,
            "pillow": PIL.__version__}


def _lanczos3(img, out_w: int, out_h: int):
    """A float64 Lanczos-3 resize of our own (not Pillow's integer kernel), as a
    second reference: separable, the kernel widened by the scale when shrinking
    (antialiasing), pixel centres aligned, weights normalised over the taps
    that fall inside the image."""
    import numpy as np

    def taps(in_size: int, out_size: int):
        scale = in_size / out_size
        stretch = max(scale, 1.0)
        support = 3.0 * stretch
        centres = (np.arange(out_size) + 0.5) * scale - 0.5
        first = np.floor(centres - support).astype(np.int64) + 1
        n = int(np.ceil(2 * support)) + 1
        idx = first[:, None] + np.arange(n)[None, :]
        x = (idx - centres[:, None]) / stretch
        w = np.sinc(x) * np.sinc(x / 3.0)
        w[np.abs(x) >= 3.0] = 0.0
        inside = (idx >= 0) & (idx < in_size)
        w = np.where(inside, w, 0.0)
        w /= w.sum(axis=1, keepdims=True)
        return np.clip(idx, 0, in_size - 1), w

    h, w_in = img.shape[:2]
    idx, wts = taps(w_in, out_w)
    rows = np.zeros((h, out_w, 3))
    for t in range(idx.shape[1]):
        rows += img[:, idx[:, t], :] * wts[:, t][None, :, None]
    idx, wts = taps(h, out_h)
    out = np.zeros((out_h, out_w, 3))
    for t in range(idx.shape[1]):
        out += rows[idx[:, t], :, :] * wts[:, t][:, None, None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _h_psnr(spec: dict) -> dict:
    """spec: {"pairs": [[src, out], ...]} -> PSNR of each out against two
    references of the full decode resized to exactly the output's size:
    Pillow's LANCZOS and a float Lanczos-3 of our own (so no contender's own
    kernel is the yardstick), plus Pillow's reference through a JPEG q85
    round trip (the ceiling) at each size used."""
    import io

    import numpy as np
    import PIL
    from PIL import Image, ImageOps

    def psnr(a, b) -> float:
        mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
        return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)

    by_src: dict[str, list[str]] = {}
    for src, out in spec["pairs"]:
        by_src.setdefault(src, []).append(out)
    results, ceilings = {}, {}
    for src, outs in by_src.items():
        with Image.open(src) as im:
            im.load()  # full decode: no draft
            full = ImageOps.exif_transpose(im).convert("RGB")
        full_f = np.asarray(full).astype(np.float64)
        refs, own = {}, {}
        for out in outs:
            with Image.open(out) as o:
                got = o.convert("RGB")
            size = got.size
            if size not in refs:
                ref = full.resize(size, Image.LANCZOS)
                buf = io.BytesIO()
                ref.save(buf, "JPEG", quality=QUALITY)
                buf.seek(0)
                with Image.open(buf) as rt:
                    round_trip = np.asarray(rt.convert("RGB"))
                refs[size] = np.asarray(ref)
                own[size] = _lanczos3(full_f, size[0], size[1])
                ceilings.setdefault(src, {})[f"{size[0]}x{size[1]}"] = psnr(refs[size], round_trip)
            got = np.asarray(got)
            results[out] = {"psnr": psnr(refs[size], got), "psnr_own": psnr(own[size], got),
                            "size": list(size), "source_size": list(full.size)}
        del full, full_f, refs, own
    return {"outputs": results, "ceilings": ceilings, "pillow": PIL.__version__, "numpy": np.__version__}


def _proc_cpu_s(pid: int | str) -> float:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def helper_main(argv: list[str]) -> int:
    kind, spec_path = argv
    spec = json.loads(Path(spec_path).read_text())
    fn = {"make12mp": _h_make12mp, "pillow": _h_pillow, "psnr": _h_psnr}[kind]
    print(json.dumps(fn(spec)), flush=True)
    return 0


# ==========================================================================
# Child processes: each in its own session, so its whole tree can be killed.

_LIVE: dict[int, subprocess.Popen] = {}


def kill_tree(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def kill_all_children() -> None:
    for proc in list(_LIVE.values()):
        kill_tree(proc)
        try:
            proc.wait(timeout=5)
        except (subprocess.TimeoutExpired, ChildProcessError):
            pass
    _LIVE.clear()


def tail(path: Path, n: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-n:].strip()
    except OSError:
        return ""


def run_procs(argvs: list[list[str]], workdir: Path, timeout: float, env: dict | None = None) -> dict:
    """Start every argv at once, wait for all; wall time and each one's rusage (wait4)."""
    logs = []
    procs = []
    t0 = time.perf_counter()
    try:
        for i, argv in enumerate(argvs):
            out, err = workdir / f"proc{i}.out", workdir / f"proc{i}.err"
            logs.append((out, err))
            with open(out, "wb") as fo, open(err, "wb") as fe:
                p = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=fo, stderr=fe,
                                     env=env, start_new_session=True)
            _LIVE[p.pid] = p
            procs.append(p)
        timer = threading.Timer(timeout, lambda: [kill_tree(p) for p in procs])
        timer.daemon = True
        timer.start()
        usages, codes = [], []
        for p in procs:
            _pid, status, usage = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            _LIVE.pop(p.pid, None)
            usages.append(usage)
            codes.append(p.returncode)
        wall = time.perf_counter() - t0
        timer.cancel()
    finally:
        for p in procs:
            if p.returncode is None:
                kill_tree(p)
                p.wait()
                _LIVE.pop(p.pid, None)
    if wall >= timeout:
        raise Fail(f"`{' '.join(argvs[0])}` ran over {timeout:.0f} s and was killed")
    for argv, code, (out, err) in zip(argvs, codes, logs):
        if code != 0:
            raise Fail(f"`{' '.join(argv)}` failed (status {code}):\n{tail(err) or tail(out)}")
    return {
        "wall_s": wall,
        "cpu_s": sum(u.ru_utime + u.ru_stime for u in usages),
        "rss_kib": sum(u.ru_maxrss for u in usages),
        "processes": len(argvs),
        "stdout": [tail(out, 20000) for out, _ in logs],
    }


def last_json(text: str, what: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise Fail(f"{what} printed no JSON:\n{text[-2000:]}")


def run_helper(python: Path, kind: str, spec: dict, workdir: Path, timeout: float) -> dict:
    spec_path = workdir / f"{kind}-spec.json"
    spec_path.write_text(json.dumps(spec))
    r = run_procs([[str(python), str(Path(__file__).resolve()), "_helper", kind, str(spec_path)]], workdir, timeout)
    return last_json(r["stdout"][0], f"the {kind} helper")


# ==========================================================================
# Setting up


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def venv_python(home: Path) -> Path:
    python = home / "peer-venv/bin/python"
    if python.exists():
        r = subprocess.run([str(python), "-c", "import PIL, numpy"], capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            return python
    # Made exactly as bench/compare.py makes it (hash-pinned requirements of the Python peer).
    say(f"{python} missing or without Pillow/numpy: creating it the way bench/compare.py does")
    try:
        return Path(ensure_peer_venv(home))
    except Fail as e:
        raise Fail(f"{e}\n(or run `python3 bench/compare.py --only peer --duration 1` once)") from None


def ensure_vips() -> str:
    path = shutil.which("vipsthumbnail")
    if path is None:
        if os.geteuid() == 0 and shutil.which("apt-get"):
            say("vipsthumbnail missing: apt-get install -y libvips-tools")
            r = subprocess.run(["apt-get", "install", "-y", "libvips-tools"], capture_output=True, text=True,
                               timeout=900, env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
            if r.returncode != 0:
                raise Fail(f"apt-get install -y libvips-tools failed:\n{(r.stderr or r.stdout)[-2000:]}")
            path = shutil.which("vipsthumbnail")
        if path is None:
            raise Fail("vipsthumbnail not found: install it with `sudo apt-get install -y libvips-tools` "
                       "(or leave it out: --only darkroom,http,pillow)")
    r = subprocess.run([path, "--vips-version"], capture_output=True, text=True, timeout=30)
    return r.stdout.strip() or "libvips (version unknown)"


def check_darkroom(darkroom: Path, only: list[str]) -> str:
    if not darkroom.is_file() or not os.access(darkroom, os.X_OK):
        raise Fail(f"{darkroom} not found: run ./scripts/setup.sh first (it builds target/release/darkroom)")
    for name, sub in (("darkroom", "thumbnails"), ("http", "serve")):
        if name in only:
            r = subprocess.run([str(darkroom), sub, "--help"], capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise Fail(f"{darkroom} has no `{sub}` command yet (rebuild it with "
                           f"`cargo build --release -p darkroom` once it exists, or leave it out: "
                           f"--only {','.join(c for c in only if c not in ('darkroom', 'http')) or 'vips,pillow'}):\n"
                           f"{r.stderr.strip()[-500:]}")
    r = subprocess.run([str(darkroom), "--version"], capture_output=True, text=True, timeout=30)
    return r.stdout.strip()


def camera_set(home: Path) -> list[Path]:
    folder = home / "photos/camera"
    if not folder.is_dir():
        raise Fail(f"{folder} not found: run ./scripts/setup.sh first (it fetches the camera photos)")
    photos = sorted(p for p in folder.iterdir()
                    if p.suffix.lower() in (".jpg", ".jpeg") and p.name != ELEPHANTS and p.is_file())
    if not photos:
        raise Fail(f"no camera JPEGs in {folder}: run ./scripts/setup.sh first")
    return photos


def twelve_mp_set(home: Path, python: Path, workdir: Path) -> list[Path]:
    folder = home / "bench/photos-12mp"
    want = [folder / f"Elephants-{CROP_W}x{CROP_H}-{name}.jpg" for name in CROPS]
    if all(p.is_file() for p in want):
        return want
    src = home / "photos/camera" / ELEPHANTS
    if not src.is_file():
        raise Fail(f"{src} not found: run ./scripts/setup.sh first (it fetches the camera photos)")
    say(f"making the 12 MP set in {folder} (crops of {src.name}, baseline JPEG q{CROP_QUALITY})")
    run_helper(python, "make12mp", {"src": str(src), "outdir": str(folder)}, workdir, 600)
    return want


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def copy_name(src: Path, k: int) -> str:
    return src.name if k == 0 else f"{src.stem}~{k}{src.suffix}"


def make_run_dir(photos: list[Path], copies: int, folder: Path) -> list[Path]:
    """The set repeated `copies` times in one folder (hard links where possible)."""
    folder.mkdir(parents=True)
    files = []
    for k in range(copies):
        for p in photos:
            dst = folder / copy_name(p, k)
            link_or_copy(p, dst)
            files.append(dst)
    return files


def split(files: list[Path], n: int) -> list[list[Path]]:
    """Greedy by size, so the parallel processes finish together."""
    groups: list[list[Path]] = [[] for _ in range(n)]
    loads = [0] * n
    for f in sorted(files, key=lambda f: f.stat().st_size, reverse=True):
        i = loads.index(min(loads))
        groups[i].append(f)
        loads[i] += f.stat().st_size
    return [g for g in groups if g]


# ==========================================================================
# The library contenders: one (set, size)


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


def run_darkroom_cli(ctx, files: list[Path], indir: Path, outdir: Path, width: int, jobs: int) -> dict:
    argv = [str(ctx.darkroom), "--home", str(ctx.home), "thumbnails", "--width", str(width), "--height", str(width),
            "--fit", "contain", "--format", "jpeg", "--quality", str(QUALITY), str(indir), str(fresh(outdir)),
            "--jobs", str(jobs), "--overwrite"]
    r = run_procs([argv], ctx.workdir, ctx.timeout)
    r["photos"] = len(files)
    return r


def run_vips(ctx, files: list[Path], indir: Path, outdir: Path, width: int, jobs: int) -> dict:
    fresh(outdir)
    env = {**os.environ, "VIPS_CONCURRENCY": "1"}
    argvs = [["vipsthumbnail", "-s", f"{width}x{width}", "-o", f"{outdir}/%s.jpg[Q={QUALITY}]", *map(str, group)]
             for group in split(files, jobs)]
    r = run_procs(argvs, ctx.workdir, ctx.timeout, env=env)
    r["photos"] = len(files)
    return r


def run_pillow(ctx, files: list[Path], indir: Path, outdir: Path, width: int, jobs: int) -> dict:
    fresh(outdir)
    spec = {"width": width, "procs": jobs, "jobs": [[str(f), str(outdir / (f.stem + ".jpg"))] for f in files]}
    r = run_helper(ctx.python, "pillow", spec, ctx.workdir, ctx.timeout)
    ctx.versions["Pillow"] = r.get("pillow")
    r["photos"] = len(files)
    return r


LIBRARY_RUNNERS = {"darkroom": run_darkroom_cli, "vips": run_vips, "pillow": run_pillow}


def best_of(runs: list[dict], key=lambda r: r["wall_s"] / r["photos"]) -> dict:
    best = min(runs, key=key)
    return {**best, "rss_kib": max(r["rss_kib"] for r in runs)}


# vipsthumbnail is timed as whole processes: each gets at least this many
# photos, so its start-up is amortised (the others run in-process or once).
VIPS_PHOTOS_PER_PROCESS = 48


def bench_library(ctx, name: str, photos: list[Path], copies: int, width: int, tag: str) -> dict:
    runner = LIBRARY_RUNNERS[name]
    if name == "vips":
        copies = max(copies, math.ceil(VIPS_PHOTOS_PER_PROCESS * ctx.cores / len(photos)))
    base = ctx.workdir / f"{tag}-{name}"
    indir = base / "in"
    files = make_run_dir(photos, copies, indir)
    outdir = base / "out"
    say(f"{tag}: {LABELS[name]}, {len(files)} photos per run, 1 thread then {ctx.cores}")
    runner(ctx, files, indir, outdir, width, ctx.cores)  # warm the page cache (and the binary), untimed
    one = best_of([runner(ctx, files, indir, outdir, width, 1) for _ in range(ctx.repeat)])
    many = best_of([runner(ctx, files, indir, outdir, width, ctx.cores) for _ in range(ctx.repeat)])
    outputs = {}
    for p in photos:
        out = outdir / (p.stem + ".jpg")
        if not out.is_file():
            raise Fail(f"{LABELS[name]} wrote no {out.name} for {p} (outputs: "
                       f"{sorted(x.name for x in outdir.iterdir())[:8]} ...)")
        outputs[str(p)] = str(out)
    return {
        "ms_per_photo": 1000 * one["wall_s"] / one["photos"],
        "cpu_ms_per_photo": 1000 * one["cpu_s"] / one["photos"],
        "photos_per_s": many["photos"] / many["wall_s"],
        "rss1_mib": one["rss_kib"] / 1024,
        "rssn_mib": many["rss_kib"] / 1024,
        "processes_n": many["processes"],
        "photos_per_run": len(files),
        "outputs": outputs,
    }


# ==========================================================================
# The HTTP contender


class HttpServer:
    def __init__(self, ctx):
        self.ctx = ctx
        self.store = Path(tempfile.mkdtemp(prefix="darkroom-bench-store-"))
        self.proc: subprocess.Popen | None = None
        self.log = ctx.workdir / "serve.log"
        self.ids: dict[str, str] = {}

    def start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        base = [str(self.ctx.darkroom), "--home", str(self.ctx.home), "serve", "--listen", f"127.0.0.1:{port}"]
        # --role api: uploads are queued, not analysed, so no pipeline worker
        # takes CPU from the thumbnails being timed; the records go beside the
        # photos, not into the home's database.
        with_set = [*base, "--role", "api", "--set", "thumbnails.cache=false", "--set", f'storage.path="{self.store}"',
                    "--set", f'metadata.path="{self.store / "darkroom.db"}"']
        if self._try(with_set):
            return
        say("`--set storage.path=...` was refused: retrying with a --config file")
        config = self.ctx.workdir / "serve.toml"
        config.write_text(f'[storage]\nkind = "local"\npath = {json.dumps(str(self.store))}\n\n'
                          "[thumbnails]\ncache = false\n")
        if not self._try([*base, "--config", str(config)]):
            raise Fail(f"darkroom serve exited with status {self.proc.returncode}; its log ({self.log}):\n"
                       f"{tail(self.log)}")

    def _try(self, argv: list[str]) -> bool:
        say(f"starting {' '.join(argv)}")
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        _LIVE[self.proc.pid] = self.proc
        start = time.monotonic()
        while time.monotonic() - start < READY_TIMEOUT_S:
            if self.proc.poll() is not None:
                _LIVE.pop(self.proc.pid, None)
                return False
            if http("GET", f"{self.url}/readyz") == 200:
                self.ready_rss_mib = status_kib(self.proc.pid, "VmRSS") / 1024
                say(f"darkroom serve ready after {time.monotonic() - start:.1f} s, RSS {self.ready_rss_mib:.0f} MiB")
                return True
            time.sleep(0.25)
        raise Fail(f"darkroom serve not ready after {READY_TIMEOUT_S:.0f} s; its log ({self.log}):\n{tail(self.log)}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, "darkroom serve")
            _LIVE.pop(self.proc.pid, None)
        shutil.rmtree(self.store, ignore_errors=True)

    def upload(self, photo: Path) -> str:
        if str(photo) in self.ids:
            return self.ids[str(photo)]
        req = urllib.request.Request(f"{self.url}/v1/photos", data=photo.read_bytes(), method="POST",
                                     headers={"Content-Type": "image/jpeg"})
        try:
            with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as e:
            detail = e.read()[:500].decode(errors="replace")
            if e.code in (404, 405):
                raise Fail(f"this darkroom serve has no POST /v1/photos route yet ({e.code}): rebuild it once the "
                           f"photo routes exist, or leave it out: --only darkroom,vips,pillow") from None
            raise Fail(f"POST /v1/photos {photo.name}: {e.code} {detail}") from None
        photo_id = body.get("id")
        if not photo_id:
            raise Fail(f"POST /v1/photos {photo.name} answered without an id: {body}")
        self.ids[str(photo)] = photo_id
        return photo_id

    def server_state(self) -> tuple[float, int]:
        return _proc_cpu_s(self.proc.pid), status_kib(self.proc.pid, "VmHWM")

    def reset_peak(self) -> bool:
        try:
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")
            return True
        except OSError:
            return False

    def load(self, ids: list[str], width: int, clients: int, save: Path | None = None) -> dict:
        """GET each id's thumbnail once, from `clients` threads with one keep-alive connection each."""
        import http.client

        host, port = self.url.removeprefix("http://").split(":")
        query = f"w={width}&h={width}&fit=contain&format=jpeg&q={QUALITY}"
        lock = threading.Lock()
        state = {"next": 0, "error": None}
        latencies: list[float] = []

        def worker() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=HTTP_TIMEOUT_S)
            try:
                while True:
                    with lock:
                        i = state["next"]
                        if i >= len(ids) or state["error"]:
                            return
                        state["next"] = i + 1
                    path = f"/v1/photos/{ids[i]}/thumbnail?{query}"
                    t0 = time.perf_counter()
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        body = resp.read()
                    except (OSError, http.client.HTTPException) as e:
                        conn.close()
                        with lock:
                            state["error"] = state["error"] or f"GET {path}: {e!r}"
                        return
                    dt = time.perf_counter() - t0
                    if resp.status != 200:
                        with lock:
                            state["error"] = state["error"] or \
                                f"GET {path}: {resp.status} {body[:300].decode(errors='replace')}"
                        return
                    with lock:
                        latencies.append(dt)
                    if save is not None:
                        (save / f"{ids[i]}.jpg").write_bytes(body)
            finally:
                conn.close()

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
        reset = self.reset_peak()
        cpu0, _ = self.server_state()
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        deadline = time.monotonic() + self.ctx.timeout
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        wall = time.perf_counter() - t0
        if any(t.is_alive() for t in threads):
            raise Fail(f"HTTP load ran over {self.ctx.timeout:.0f} s")
        cpu1, hwm = self.server_state()
        if state["error"]:
            if self.proc.poll() is not None:
                raise Fail(f"darkroom serve died (status {self.proc.returncode}); its log:\n{tail(self.log)}")
            raise Fail(f"HTTP thumbnail request failed: {state['error']}")
        return {"wall_s": wall, "photos": len(latencies), "cpu_s": cpu1 - cpu0, "rss_kib": hwm,
                "peak_reset": reset, "mean_latency_s": sum(latencies) / len(latencies)}


def bench_http(ctx, server: HttpServer, photos: list[Path], copies: int, width: int, tag: str) -> dict:
    ids = [server.upload(p) for p in photos]
    run = ids * copies
    say(f"{tag}: {LABELS['http']}, {len(run)} GETs per run, 1 client then {ctx.cores}")
    server.load(run, width, ctx.cores)  # warm-up, untimed
    one = best_of([server.load(run, width, 1) for _ in range(ctx.repeat)], key=lambda r: r["mean_latency_s"])
    many = best_of([server.load(run, width, ctx.cores) for _ in range(ctx.repeat)])
    outdir = fresh(ctx.workdir / f"{tag}-http-out")
    server.load(ids, width, 1, save=outdir)
    return {
        "ms_per_photo": 1000 * one["mean_latency_s"],
        "cpu_ms_per_photo": 1000 * one["cpu_s"] / one["photos"],
        "photos_per_s": many["photos"] / many["wall_s"],
        "rss1_mib": one["rss_kib"] / 1024,
        "rssn_mib": many["rss_kib"] / 1024,
        "peak_reset": one["peak_reset"],
        "processes_n": 1,
        "photos_per_run": len(run),
        "outputs": {str(p): str(outdir / f"{i}.jpg") for p, i in zip(photos, ids)},
    }


# ==========================================================================
# Report


def fmt(v, digits=1) -> str:
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    if isinstance(v, float) and math.isinf(v):
        return "∞"
    return f"{v:.{digits}f}"


def table(header: list[str], rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(header) + " |",
               "|" + "|".join("---" if i < 3 else "---:" for i in range(len(header))) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def render(ctx, results: list[dict], markdown: bool) -> str:
    n = ctx.cores
    header = ["set", "size", "contender", "ms/photo, 1 thread", "CPU ms/photo", f"photos/s, {n} cores",
              "peak RSS MiB, 1 / all", "PSNR dB vs Pillow, mean (min)", "PSNR dB vs float Lanczos3",
              "output (first photo)"]
    rows = []
    for r in results:
        if r["contender"] == "ceiling":
            rows.append([r["set"], str(r["size"]), "ceiling: reference, JPEG q85 round trip", "", "", "", "",
                         f"{fmt(r['psnr_mean'], 2)} ({fmt(r['psnr_min'], 2)})", "", ""])
            continue
        rows.append([r["set"], str(r["size"]), LABELS[r["contender"]], fmt(r["ms_per_photo"], 2),
                     fmt(r["cpu_ms_per_photo"], 2), fmt(r["photos_per_s"], 1),
                     f"{fmt(r['rss1_mib'], 0)} / {fmt(r['rssn_mib'], 0)}",
                     f"{fmt(r.get('psnr_mean'), 2)} ({fmt(r.get('psnr_min'), 2)})",
                     f"{fmt(r.get('psnr_own_mean'), 2)} ({fmt(r.get('psnr_own_min'), 2)})", r.get("first_size", "")])
    out = [table(header, rows, markdown)]
    ratio_rows = []
    by_key = {(r["set"], r["size"], r["contender"]): r for r in results}
    for (s, size, c), r in by_key.items():
        vips = by_key.get((s, size, "vips"))
        if c in ("darkroom", "http") and vips:
            ratio_rows.append([s, str(size), f"{LABELS[c]} / vipsthumbnail",
                               f"{r['ms_per_photo'] / vips['ms_per_photo']:.2f}×",
                               f"{r['photos_per_s'] / vips['photos_per_s']:.2f}×",
                               f"{r['rssn_mib'] / vips['rssn_mib']:.2f}×",
                               f"{r['psnr_mean'] - vips['psnr_mean']:+.2f}"])
    if ratio_rows:
        out.append("")
        out.append(table(["set", "size", "ratio", "time/photo, 1 thread (lower is better)",
                          f"photos/s, {n} cores (higher is better)", "peak RSS, all cores", "PSNR difference dB"],
                         ratio_rows, markdown))
    return "\n".join(out)


def attach_fidelity(ctx, tag_results: list[dict], set_name: str, size: int) -> list[dict]:
    pairs = [[src, out] for r in tag_results for src, out in r["outputs"].items()]
    if not pairs:
        return []
    say(f"{set_name} {size}: fidelity of {len(pairs)} outputs against Pillow's full-decode LANCZOS "
        "and a float Lanczos-3 of our own")
    f = run_helper(ctx.python, "psnr", {"pairs": pairs}, ctx.workdir, ctx.timeout)
    ctx.versions["numpy"] = f.get("numpy")
    for r in tag_results:
        values = [f["outputs"][out]["psnr"] for out in r["outputs"].values()]
        r["psnr_mean"] = sum(values) / len(values)
        r["psnr_min"] = min(values)
        own = [f["outputs"][out]["psnr_own"] for out in r["outputs"].values()]
        r["psnr_own_mean"] = sum(own) / len(own)
        r["psnr_own_min"] = min(own)
        first = f["outputs"][next(iter(r["outputs"].values()))]
        r["first_size"] = "×".join(map(str, first["size"]))
        wrong = [Path(src).name for src, out in r["outputs"].items() if max(f["outputs"][out]["size"]) != size
                 and max(f["outputs"][out]["source_size"]) > size]
        if wrong:
            r["first_size"] += f" (long side ≠ {size}: {', '.join(wrong)})"
    ceilings = [sum(c.values()) / len(c) for c in f["ceilings"].values()]
    return [{"set": set_name, "size": size, "contender": "ceiling", "psnr_mean": sum(ceilings) / len(ceilings),
             "psnr_min": min(ceilings)}]


# ==========================================================================


class Ctx:
    pass


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=Path(os.environ.get("DARKROOM_HOME", "var")))
    p.add_argument("--sizes", default="256,1024", help="box sides W (W×W, contain), comma-separated")
    p.add_argument("--sets", default="camera,12mp", help="camera, 12mp")
    p.add_argument("--only", default=",".join(CONTENDERS), help="darkroom, http, vips, pillow")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per measurement; the best is kept")
    p.add_argument("--min-run", type=int, help="photos per timed run at least: the set is repeated "
                                                 "(default: max(16, 8 × cores))")
    p.add_argument("--darkroom", type=Path, default=ROOT / "target/release/darkroom")
    p.add_argument("--timeout", type=float, default=600, help="seconds any one run may take")
    p.add_argument("--markdown", action="store_true", help="print the tables as Markdown")
    p.add_argument("--json", type=Path, help="also write the raw measurements here")
    args = p.parse_args(argv)

    ctx = Ctx()
    ctx.home = args.home if args.home.is_absolute() else Path.cwd() / args.home
    ctx.darkroom = args.darkroom if args.darkroom.is_absolute() else Path.cwd() / args.darkroom
    ctx.repeat, ctx.timeout, ctx.cores = args.repeat, args.timeout, cores()
    ctx.versions = {}
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        raise Fail(f"--sizes {args.sizes!r}: expected comma-separated integers") from None
    sets = [s.strip() for s in args.sets.split(",") if s.strip()]
    only = [c.strip() for c in args.only.split(",") if c.strip()]
    if bad := [s for s in sets if s not in ("camera", "12mp")]:
        raise Fail(f"--sets: unknown {bad} (camera, 12mp)")
    if bad := [c for c in only if c not in CONTENDERS]:
        raise Fail(f"--only: unknown {bad} ({', '.join(CONTENDERS)})")
    if not sizes or min(sizes) < 1 or args.repeat < 1 or not sets or not only:
        raise Fail("--sizes, --sets and --only must not be empty; sizes and --repeat at least 1")
    only = [c for c in CONTENDERS if c in only]
    min_run = args.min_run or max(16, 8 * ctx.cores)

    cameras = camera_set(ctx.home)
    if "darkroom" in only or "http" in only:
        ctx.versions["darkroom"] = check_darkroom(ctx.darkroom, only)
    if "http" in only and not (ctx.home / "models").is_dir():
        raise Fail(f"{ctx.home / 'models'} not found: run ./scripts/setup.sh first (darkroom serve loads the models)")
    if "vips" in only:
        ctx.versions["vips"] = ensure_vips()
    ctx.python = venv_python(ctx.home)

    (ctx.home / "bench").mkdir(parents=True, exist_ok=True)
    ctx.workdir = Path(tempfile.mkdtemp(prefix="thumbs-", dir=ctx.home / "bench"))  # same filesystem: hard links
    server = None
    results: list[dict] = []
    load_before = os.getloadavg()
    try:
        photo_sets = {}
        for s in sets:
            photo_sets[s] = cameras if s == "camera" else twelve_mp_set(ctx.home, ctx.python, ctx.workdir)
        if "http" in only:
            server = HttpServer(ctx)
            server.start()
        for s in sets:
            photos = photo_sets[s]
            copies = max(1, math.ceil(min_run / len(photos)))
            for size in sizes:
                tag = f"{s}-{size}"
                block = []
                for c in only:
                    if c == "http":
                        r = bench_http(ctx, server, photos, copies, size, tag)
                    else:
                        r = bench_library(ctx, c, photos, copies, size, tag)
                    block.append({"set": s, "size": size, "contender": c, **r})
                ceiling = attach_fidelity(ctx, block, s, size)
                results += block + ceiling
                for c in only:
                    shutil.rmtree(ctx.workdir / f"{tag}-{c}", ignore_errors=True)
                shutil.rmtree(ctx.workdir / f"{tag}-http-out", ignore_errors=True)
    finally:
        if server is not None:
            server.stop()
        kill_all_children()
        shutil.rmtree(ctx.workdir, ignore_errors=True)
    load_after = os.getloadavg()

    print()
    print(f"machine: {machine()}; load average before / after: {load_before[0]:.2f} / {load_after[0]:.2f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in ctx.versions.items() if v))
    for s in sets:
        ph = photo_sets[s]
        if s == "camera":
            print(f"set camera: {len(ph)} Debian mate-backgrounds camera JPEGs from {ctx.home / 'photos/camera'} "
                  f"(without {ELEPHANTS}), {sum(f.stat().st_size for f in ph) / len(ph) / 1e6:.2f} MB mean")
        else:
            print(f"set 12mp: {len(ph)} {CROP_W}×{CROP_H} crops (left, centre, right) of the 18 MP {ELEPHANTS}, "
                  f"re-encoded by Pillow as baseline JPEG q{CROP_QUALITY} ({ctx.home / 'bench/photos-12mp'})")
    print(f"each output: fit inside W×W keeping the aspect, JPEG q{QUALITY}; each timed run renders the set "
          f"repeated to ≥ {min_run} photos (vipsthumbnail: ≥ {VIPS_PHOTOS_PER_PROCESS} per process); "
          f"best of {ctx.repeat} after one untimed run")
    notes = {
        "darkroom": "whole `darkroom thumbnails` process timed (--jobs 1, then --jobs %d)" % ctx.cores,
        "http": "mean latency with 1 client; photos/s with %d client threads (keep-alive); CPU and RSS of the "
                "server, whose RSS includes the loaded models (%s MiB at ready)"
                % (ctx.cores, fmt(getattr(server, "ready_rss_mib", None), 0)),
        "vips": "whole processes timed, VIPS_CONCURRENCY=1; %d processes over a split of the files" % ctx.cores,
        "pillow": "timed in-process (no interpreter start); Pool(%d), workers started before the clock; "
                  "RSS summed over the pool's processes" % ctx.cores,
    }
    for c in only:
        print(f"  {LABELS[c]}: {notes[c]}")
    print("PSNR: against two references of a full decode, exif_transpose, resized to the output's exact size: "
          "Pillow's LANCZOS, and a float64 Lanczos-3 of this script's own")
    print()
    print(render(ctx, results, args.markdown))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "load": [load_before, load_after],
                                         "versions": ctx.versions, "results": results}, indent=2) + "\n")
    return 0


def _sigterm(_signum, _frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_helper":
        sys.exit(helper_main(sys.argv[2:]))
    signal.signal(signal.SIGTERM, _sigterm)
    try:
        sys.exit(main())
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        kill_all_children()
        print("interrupted; children stopped", file=sys.stderr)
        sys.exit(130)
