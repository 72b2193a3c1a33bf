#!/usr/bin/env bash
# Sets up (scripts/setup.sh) and runs the whole test suite: formatting, lints,
# then every test against the real model files in the Darkroom home.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup.sh

printf '\n==> cargo fmt --check\n' >&2
cargo fmt --all -- --check

printf '\n==> cargo clippy --all-targets -- -D warnings\n' >&2
cargo clippy --release --locked --all-targets -- -D warnings

printf '\n==> cargo test\n' >&2
# Release profile: shares the dependency build with setup.sh and keeps the
# pixel-level tests fast.
cargo test --release --locked --workspace
