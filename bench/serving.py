"""What the benchmarks that drive a real `darkroom serve` share: the server
on a free loopback port with its own database and blobs, a keep-alive
client, and seeding it once with the real photos through the whole
pipeline. Standard library only."""

import http.client
import json
import mimetypes
import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DARKROOM = os.path.join(ROOT, "target", "release", "darkroom")
PHOTO_EXTS = {".jpg", ".jpeg", ".png", ".webp"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`darkroom serve` on the bench's own database and blobs."""

    def __init__(self, home, work, settings=(), args=(), log="serve.log"):
        self.port = free_port()
        self.log = open(os.path.join(work, log), "ab")
        self.proc = subprocess.Popen(
            [DARKROOM, "--home", home, "serve", "--listen", f"127.0.0.1:{self.port}", *args,
             "--set", f'metadata.path="{os.path.join(work, "data", "darkroom.db")}"',
             "--set", f'storage.path="{os.path.join(work, "blobs")}"',
             *[arg for s in settings for arg in ("--set", s)]],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.conn = None
        deadline = time.time() + 300
        while self.get("/readyz")[0] != 200:
            if self.proc.poll() is not None or time.time() > deadline:
                sys.exit(f"darkroom serve did not come up; see {self.log.name}")
            time.sleep(0.5)

    def request(self, method, path, body=None, headers=None):
        for attempt in range(2):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (ConnectionError, http.client.HTTPException, OSError):
                self.conn = None
                if attempt:
                    return 0, b""
                time.sleep(0.2)
        return 0, b""

    def get(self, path):
        return self.request("GET", path)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def photos(home):
    found = []
    for folder in ("corpus/stock", "photos/camera", "samples"):
        d = os.path.join(home, folder)
        if os.path.isdir(d):
            found += sorted(os.path.join(d, f) for f in os.listdir(d)
                            if os.path.splitext(f)[1].lower() in PHOTO_EXTS)
    return found


def seed(home, work):
    """Uploads the real photos once and waits for the pipeline to finish them."""
    files = photos(home)
    if not files:
        sys.exit("no photos: run scripts/stock_corpus.py and `darkroom models fetch` first")
    server = Server(home, work)
    try:
        for i, path in enumerate(files):
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            with open(path, "rb") as f:
                status, body = server.request("POST", f"/v1/photos?uploaderId=seed{i % 7}",
                                              f.read(), {"Content-Type": kind})
            if status not in (200, 202):
                print(f"  {os.path.basename(path)}: {status} {body[:120]!r}", file=sys.stderr)
            print(f"\r  uploading {i + 1}/{len(files)}", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr)
        while True:
            waiting = 0
            for status in ("stored", "analyzed", "reviewed", "indexed"):
                code, body = server.get(f"/v1/photos?status={status}&limit=500")
                waiting += len(json.loads(body).get("photos", [])) if code == 200 else 1
            print(f"\r  {waiting} photos still in the pipeline ", end="", file=sys.stderr,
                  flush=True)
            if waiting == 0:
                break
            time.sleep(1)
        print(file=sys.stderr)
    finally:
        server.stop()
    open(os.path.join(work, "seeded"), "w").write(f"{len(files)}\n")
