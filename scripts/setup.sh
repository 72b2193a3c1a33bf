#!/usr/bin/env bash
# Sets Darkroom up on a fresh Debian machine: system packages the build needs,
# a release build, and the model repository (pinned downloads, converted and
# hash-checked by `darkroom models fetch`). Safe to run again: cached steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n==> %s\n' "$*" >&2; }

# libjpeg-turbo is built from source by the turbojpeg crate: it needs cmake and nasm.
missing=()
for tool in cmake nasm dpkg-deb python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if printf '%s\n' "${missing[@]}" | grep -qx cargo; then
  echo "error: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
apt_updated=0
apt_update() {
  if [ "$apt_updated" = 0 ]; then
    say "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
}
if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  pkgs=()
  for tool in "${missing[@]}"; do
    case "$tool" in
      cmake) pkgs+=(cmake) ;;
      nasm) pkgs+=(nasm) ;;
      dpkg-deb) pkgs+=(dpkg) ;;
      python3) pkgs+=(python3 python3-venv python3-pip) ;;
    esac
  done
  say "installing ${pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

# `apt-get download` needs package lists: refresh them once if a pinned .deb
# is not cached yet.
home="${DARKROOM_HOME:-var}"
if [ "$(ls "$home"/cache/downloads/*.deb 2>/dev/null | wc -l)" -lt 3 ]; then
  apt_update
fi

say "cargo build --release"
cargo build --release --locked -p darkroom

say "darkroom models fetch"
./target/release/darkroom --home "$home" models fetch
