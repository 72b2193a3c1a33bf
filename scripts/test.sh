#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: formatting, lints,
# then every test against the real model files in the Darkroom home.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh
home="${DARKROOM_HOME:-var}"

# Pillow's reference tensors for the photos whose licences keep their derived
# fixtures out of git (GPL camera JPEGs, motorcycle_left.png), made here with
# the hash-pinned venv that `darkroom models fetch` installed.
printf '\n==> parity references (Pillow) into %s/parity\n' "$home" >&2
"$home/venv/bin/python" scripts/parity_reference.py --home "$home" --local

# The decoder conformance corpus (Pillow's test images, pinned and
# hash-checked) and Pillow's own verdict on each file, for
# crates/darkroom/tests/corpus.rs.
printf '\n==> decoder conformance corpus and Pillow verdicts into %s/corpus\n' "$home" >&2
./target/release/darkroom --home "$home" models fetch --test-corpus
"$home/venv/bin/python" scripts/corpus_reference.py --home "$home"

printf '\n==> cargo fmt --check\n' >&2
cargo fmt --all -- --check

printf '\n==> cargo clippy --all-targets -- -D warnings\n' >&2
cargo clippy --release --locked --all-targets -- -D warnings

# moto, an S3-compatible server on loopback, for crates/storage/tests/s3.rs
# (which fails without MOTO_ENDPOINT); stopped however this script exits.
printf '\n==> moto (S3 for the storage tests)\n' >&2
moto_env="$(./scripts/moto.sh start)"
trap './scripts/moto.sh stop; ./scripts/services.sh stop' EXIT
export "$moto_env"

# PostgreSQL and NATS JetStream on loopback, for the pipeline's scale-out
# tests (crates/pipeline/tests, crates/darkroom/tests/pipeline.rs): used if
# running, installed and started if not (stopped again at exit).
printf '\n==> PostgreSQL and NATS (the scale-out backends)\n' >&2
services_env="$(./scripts/services.sh ensure)"
while IFS= read -r line; do
  export "$line"
done <<<"$services_env"

printf '\n==> cargo test\n' >&2
# Release profile: shares the dependency build with setup.sh and keeps the
# pixel-level tests fast.
cargo test --release --locked --workspace
