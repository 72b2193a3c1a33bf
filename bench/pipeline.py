#!/usr/bin/env python3
"""The asynchronous pipeline's cost: photos/s end to end (upload to outcome) next to
/v1/analyze on the same photos and the same machine.

    python3 bench/pipeline.py [--photos N] [--duration S] [--concurrency C] [--only embedded,scale-out]

For each deployment it starts the servers on loopback, then runs in turn:
  analyze   `darkroom bench` closed loop against /v1/analyze (C requests in flight,
            4 photos each, --duration seconds after a warm-up): photos/s;
  pipeline  `darkroom bench --pipeline N` (C uploads in flight): N photos uploaded to
            POST /v1/photos, timed from the first upload until all N reached an outcome.

Deployments:
  embedded   one `darkroom serve` (role all): SQLite metadata and queue, local blobs;
  scale-out  one `--role api` and two `--role worker` processes: PostgreSQL metadata
             (--postgres, a fresh schema, dropped at the end), NATS JetStream queue and
             event stream (a nats-server of the script's own on a free port, its store in
             a temporary folder), local blobs shared by the three processes.
             /v1/analyze is measured on the api process.

Photos: the camera JPEGs in HOME/photos/camera without the 18 MP Elephants one (12
photos of ~3 MP). Needs `./scripts/setup.sh` first, and for scale-out the servers
`scripts/services.sh ensure` makes sure of.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import ROOT, Fail, Server, free_port, http, machine, say  # noqa: E402


def photo_folder(home: Path, into: Path) -> Path:
    folder = into / "photos"
    folder.mkdir()
    for photo in sorted((home / "photos" / "camera").glob("*.jpg")):
        if not photo.name.startswith("Elephants"):
            (folder / photo.name).symlink_to(photo.resolve())
    if not any(folder.iterdir()):
        raise Fail(f"no camera photos under {home}/photos/camera: run ./scripts/setup.sh")
    return folder


def bench(darkroom: Path, url: str, photos: Path, extra: list[str]) -> dict:
    cmd = [str(darkroom), "bench", "--url", url, "--photos", str(photos), "--json", *extra]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise Fail(f"`{' '.join(cmd)}` failed (status {r.returncode}):\n{(r.stderr or r.stdout)[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise Fail(f"nothing listening on 127.0.0.1:{port} after 10 s")


def ready(url: str):
    return lambda: http("GET", f"{url}/readyz") == 200


def serve(darkroom: Path, name: str, home: Path, logdir: Path, settings: list[str], role: str) -> Server:
    port = free_port()
    argv = [str(darkroom), "--home", str(home), "serve", "--role", role,
            "--listen", f"127.0.0.1:{port}"]
    for s in settings:
        argv += ["--set", s]
    server = Server(name, argv, port, logdir)
    server.wait_ready(ready(server.url))
    return server


def measure(darkroom: Path, url: str, photos: Path, args) -> tuple[dict, dict]:
    say(f"  /v1/analyze: {args.duration:g} s closed loop, {args.concurrency} in flight, 4 photos each")
    analyze = bench(darkroom, url, photos, ["--concurrency", str(args.concurrency), "--images-per-request", "4",
                                            "--duration", f"{args.duration:g}", "--warmup", "3"])
    say(f"  pipeline: {args.photos} uploads, {args.concurrency} in flight, until all reach an outcome")
    pipeline = bench(darkroom, url, photos, ["--pipeline", str(args.photos), "--concurrency", str(args.concurrency)])
    return analyze, pipeline


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--home", type=Path, default=ROOT / "var")
    p.add_argument("--photos", type=int, default=480, help="uploads in the pipeline run (default 480)")
    p.add_argument("--duration", type=float, default=20.0, help="seconds of /v1/analyze load (default 20)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--only", default="embedded,scale-out")
    p.add_argument("--postgres", default=os.environ.get("PIPELINE_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"))
    args = p.parse_args()
    darkroom = ROOT / "target" / "release" / "darkroom"
    if not darkroom.exists():
        raise Fail("no target/release/darkroom: run ./scripts/setup.sh")
    results = {}
    with tempfile.TemporaryDirectory(prefix="darkroom-pipeline-bench-") as tmp:
        tmp = Path(tmp)
        photos = photo_folder(args.home, tmp)
        for deployment in args.only.split(","):
            logdir = tmp / deployment
            logdir.mkdir()
            common = [f'storage.path="{logdir / "blobs"}"']
            servers, cleanups = [], []
            try:
                if deployment == "embedded":
                    say("embedded: one `darkroom serve` (SQLite, local blobs)")
                    common.append(f'metadata.path="{logdir / "darkroom.db"}"')
                    api = serve(darkroom, "embedded", args.home, logdir, common, "all")
                    servers.append(api)
                elif deployment == "scale-out":
                    unique = f"bench_{os.getpid()}_{int(time.time())}"
                    nats_port = free_port()
                    servers.append(Server("nats", ["nats-server", "-js", "-a", "127.0.0.1", "-p", str(nats_port),
                                                   "-sd", str(logdir / "nats")], nats_port, logdir))
                    wait_port(nats_port)
                    cleanups.append(["psql", args.postgres, "-q", "-c", f'DROP SCHEMA IF EXISTS "{unique}" CASCADE'])
                    common += ['metadata.kind="postgres"', f'metadata.url="{args.postgres}"',
                               f'metadata.schema="{unique}"', 'queue.kind="nats"',
                               f'queue.url="nats://127.0.0.1:{nats_port}"', f'queue.prefix="{unique}"']
                    say("scale-out: 1 api + 2 workers (PostgreSQL, NATS JetStream, shared local blobs)")
                    api = serve(darkroom, "api", args.home, logdir, common, "api")
                    servers.append(api)
                    for i in (1, 2):
                        servers.append(serve(darkroom, f"worker-{i}", args.home, logdir, common, "worker"))
                else:
                    raise Fail(f"--only: unknown deployment {deployment!r} (embedded, scale-out)")
                results[deployment] = measure(darkroom, api.url, photos, args)
            finally:
                for s in reversed(servers):
                    s.stop()
                for cmd in cleanups:
                    subprocess.run(cmd, capture_output=True)
    print(f"\n{machine()}; {args.photos} uploads; /v1/analyze {args.duration:g} s; {args.concurrency} in flight\n")
    print("| deployment | /v1/analyze photos/s | pipeline photos/s (upload → outcome) | pipeline / analyze | upload p50 / p99 ms | outcomes |")
    print("|---|---:|---:|---:|---|---|")
    for deployment, (analyze, pipeline) in results.items():
        a, q = analyze["photos_per_second"], pipeline["photos_per_second"]
        outcomes = ", ".join(f"{s} {n}" for s, n in pipeline["outcomes"])
        print(f"| {deployment} | {a:.1f} | {q:.1f} | {q / a:.2f} | "
              f"{pipeline['upload_p50_ms']:.0f} / {pipeline['upload_p99_ms']:.0f} | {outcomes} |")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fail as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
