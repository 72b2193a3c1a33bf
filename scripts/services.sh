#!/usr/bin/env bash
# Makes sure the servers the scale-out tests talk to are running on loopback:
# PostgreSQL on 127.0.0.1:5432 and NATS with JetStream on 127.0.0.1:4222.
#
#   scripts/services.sh ensure   # prints the VAR=value lines to export
#   scripts/services.sh stop     # stops what `ensure` started (nothing else)
#
# A machine that already runs them (the development machines do) is left
# alone. Otherwise the Debian packages are installed (apt-get) and started:
# PostgreSQL's own cluster through pg_ctlcluster, with a password for the
# postgres user set so that a password-authenticated loopback login works;
# nats-server with its JetStream store under the Darkroom home.
set -euo pipefail
cd "$(dirname "$0")/.."

home="${DARKROOM_HOME:-var}"
state="$home/services"
mkdir -p "$state"

say() { printf '%s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 100); do
    port_open "$1" && return 0
    sleep 0.1
  done
  return 1
}

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi
}

apt_install() {
  say "installing $* (apt-get)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2 ||
    { as_root apt-get update -q >&2 && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >&2; } ||
    die "could not install $* with apt-get; install it, or point PIPELINE_POSTGRES_URL / PIPELINE_NATS_URL at running servers"
}

ensure_postgres() {
  if port_open 5432; then
    return
  fi
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
  local cluster
  cluster="$(pg_lsclusters --no-header 2>/dev/null | awk 'NR==1 {print $1" "$2}')"
  [ -n "$cluster" ] || die "PostgreSQL is installed but has no cluster (pg_lsclusters is empty)"
  say "starting PostgreSQL cluster $cluster"
  # shellcheck disable=SC2086
  as_root pg_ctlcluster $cluster start >&2
  wait_port 5432 || die "PostgreSQL did not open 127.0.0.1:5432"
  as_root runuser -u postgres -- psql -q -c "ALTER USER postgres PASSWORD 'postgres'" >&2
  echo "$cluster" >"$state/postgres.started"
}

ensure_nats() {
  if port_open 4222; then
    return
  fi
  command -v nats-server >/dev/null 2>&1 || apt_install nats-server
  say "starting nats-server with JetStream on 127.0.0.1:4222 (store $state/nats)"
  nohup nats-server -js -a 127.0.0.1 -p 4222 -sd "$state/nats" >"$state/nats.log" 2>&1 &
  echo $! >"$state/nats.pid"
  wait_port 4222 || die "nats-server did not open 127.0.0.1:4222 (see $state/nats.log)"
}

case "${1:-}" in
  ensure)
    ensure_postgres
    ensure_nats
    # The crash tests start their own nats-server to restart it.
    command -v nats-server >/dev/null 2>&1 || apt_install nats-server
    echo "PIPELINE_POSTGRES_URL=${PIPELINE_POSTGRES_URL:-postgres://postgres:postgres@127.0.0.1:5432/postgres}"
    echo "PIPELINE_NATS_URL=${PIPELINE_NATS_URL:-nats://127.0.0.1:4222}"
    ;;
  stop)
    if [ -f "$state/nats.pid" ]; then
      kill "$(cat "$state/nats.pid")" 2>/dev/null || true
      rm -f "$state/nats.pid"
    fi
    if [ -f "$state/postgres.started" ]; then
      # shellcheck disable=SC2046
      as_root pg_ctlcluster $(cat "$state/postgres.started") stop >&2 || true
      rm -f "$state/postgres.started"
    fi
    ;;
  *)
    die "usage: scripts/services.sh ensure|stop"
    ;;
esac
