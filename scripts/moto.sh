#!/usr/bin/env bash
# Starts or stops moto, an S3-compatible server, on loopback for the storage
# crate's integration test (crates/storage/tests/s3.rs).
#
#   scripts/moto.sh start   # prints MOTO_ENDPOINT=http://127.0.0.1:PORT on stdout
#   scripts/moto.sh stop
#
# The server runs from a venv in the Darkroom home (${DARKROOM_HOME:-var}/moto-venv),
# installed once from the hash-pinned scripts/requirements-moto.txt; later runs
# reuse it. Its pid, port and log are moto.pid, moto.port and moto.log beside it.
set -euo pipefail
cd "$(dirname "$0")/.."

home="${DARKROOM_HOME:-var}"
venv="$home/moto-venv"
requirements=scripts/requirements-moto.txt
pid_file="$home/moto.pid"
port_file="$home/moto.port"
log_file="$home/moto.log"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# The pid in moto.pid, if that process is still our moto server (a stale file
# may name a pid the system has since given to something else).
running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q moto_server || return 1
  echo "$pid"
}

answers() {
  "$venv/bin/python" - "$1" <<'EOF'
import sys, urllib.request
try:
    urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/moto-api/", timeout=1)
except Exception:
    sys.exit(1)
EOF
}

# Installs the venv unless it is there for the current requirements file: the
# marker holds the file's hash, so a changed pin set reinstalls.
ensure_venv() {
  local want
  want="$(sha256sum "$requirements" | cut -d' ' -f1)"
  if [ "$(cat "$venv/.requirements-sha256" 2>/dev/null)" = "$want" ]; then
    return
  fi
  local python=""
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python="$candidate"
      break
    fi
  done
  # The pins are CPython 3.11 wheels.
  [ -n "$python" ] || die "moto needs Python 3.11 (python3.11 or python3); scripts/setup.sh installs it"
  say "==> installing moto into $venv (once; from PyPI, hash-pinned)"
  rm -rf "$venv"
  mkdir -p "$home"
  "$python" -m venv "$venv" || die "cannot create a venv with $python (Debian: apt-get install python3-venv)"
  if ! "$venv/bin/pip" install --quiet --disable-pip-version-check \
    --require-hashes --only-binary=:all: -r "$requirements" >&2; then
    rm -rf "$venv"
    die "installing moto from PyPI failed (is PyPI reachable? pip's message is above)"
  fi
  echo "$want" >"$venv/.requirements-sha256"
}

start() {
  local pid port
  if pid="$(running_pid)"; then
    port="$(cat "$port_file")"
    say "moto already running (pid $pid, port $port)"
    echo "MOTO_ENDPOINT=http://127.0.0.1:$port"
    return
  fi
  ensure_venv
  # A free loopback port: bind port 0 and read what the kernel chose.
  port="$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  # Own session, so that stop can end moto with the server threads it forks
  # and a Ctrl-C in the caller's terminal does not reach it mid-test.
  setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$pid_file"
  echo "$port" >"$port_file"
  for _ in $(seq 1 150); do
    if answers "$port"; then
      say "moto listening on 127.0.0.1:$port (pid $pid, log $log_file)"
      echo "MOTO_ENDPOINT=http://127.0.0.1:$port"
      return
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  say "moto did not answer on 127.0.0.1:$port; its log:"
  tail -n 20 "$log_file" >&2 || true
  stop
  exit 1
}

stop() {
  local pid
  if pid="$(running_pid)"; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    say "moto stopped (pid $pid)"
  fi
  rm -f "$pid_file" "$port_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) die "usage: $0 start|stop" ;;
esac
