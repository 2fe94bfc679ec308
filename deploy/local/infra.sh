#!/usr/bin/env bash
# Local infrastructure for framefleet: etcd, PostgreSQL and a Kafka-protocol broker (nisshi),
# each on a free loopback port, with data, logs and pid files under one run directory.
#
#   deploy/local/infra.sh up [--storage postgres|memory]   start (idempotent), print the env
#   deploy/local/infra.sh env                              print the env of a running set
#   deploy/local/infra.sh status                           what is running
#   deploy/local/infra.sh down [--purge]                   stop; --purge also deletes the data
#
# FRAMEFLEET_RUN_DIR picks the run directory (default: <repo>/.run/local), so the demo, the
# tests and a developer's own set can run side by side.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${FRAMEFLEET_RUN_DIR:-$REPO_ROOT/.run/local}"
NISSHI_BIN="${NISSHI_BIN:-$(command -v nisshi || echo "$HOME/.cargo/bin/nisshi")}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}"
START_TIMEOUT_SECS=60

log() { echo "infra: $*" >&2; }
die() { echo "infra: error: $*" >&2; exit 1; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

is_running() { # pidfile
  [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

wait_for_port() { # name port logfile
  local deadline=$((SECONDS + START_TIMEOUT_SECS))
  until (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; do
    if ((SECONDS > deadline)); then
      log "last lines of $3:"; tail -n 20 "$3" >&2 || true
      die "$1 did not open port $2 within ${START_TIMEOUT_SECS}s (log: $3)"
    fi
    sleep 0.2
  done
}

# PostgreSQL refuses to run as root; run it as the `postgres` system user in that case.
as_pg_user() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_etcd() {
  local pidfile="$RUN_DIR/pids/etcd.pid"
  if is_running "$pidfile"; then return; fi
  command -v etcd >/dev/null || die "etcd is not installed; run scripts/setup.sh (Debian package etcd-server)"
  local client_port peer_port
  client_port=$(free_port); peer_port=$(free_port)
  mkdir -p "$RUN_DIR/etcd"
  # setsid: a Ctrl-C in the terminal that started us (say, the demo) must not stop the
  # infrastructure before the fleet has drained into it.
  ETCD_UNSUPPORTED_ARCH="${ETCD_UNSUPPORTED_ARCH:-}" setsid nohup etcd \
    --name framefleet --data-dir "$RUN_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
    --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
    --initial-cluster "framefleet=http://127.0.0.1:$peer_port" \
    >"$RUN_DIR/logs/etcd.log" 2>&1 &
  echo $! >"$pidfile"
  echo "$client_port" >"$RUN_DIR/ports/etcd"
  wait_for_port etcd "$client_port" "$RUN_DIR/logs/etcd.log"
  log "etcd on 127.0.0.1:$client_port"
}

start_postgres() {
  local data="$RUN_DIR/postgres"
  [[ -n "$PG_BIN" && -x "$PG_BIN/pg_ctl" ]] || die "PostgreSQL server is not installed; run scripts/setup.sh (Debian package postgresql)"
  if [[ -f "$RUN_DIR/ports/postgres" ]] && as_pg_user "$PG_BIN/pg_ctl" -D "$data" status >/dev/null 2>&1; then return; fi
  local port; port=$(free_port)
  mkdir -p "$data" "$RUN_DIR/pgsocket"
  if [[ $(id -u) -eq 0 ]]; then chown postgres "$data" "$RUN_DIR/pgsocket"; chmod 700 "$data"; fi
  if [[ ! -f "$data/PG_VERSION" ]]; then
    as_pg_user "$PG_BIN/initdb" -D "$data" -U nisshi --auth=trust >"$RUN_DIR/logs/initdb.log" 2>&1 \
      || { tail -n 20 "$RUN_DIR/logs/initdb.log" >&2; die "initdb failed (log: $RUN_DIR/logs/initdb.log)"; }
  fi
  touch "$RUN_DIR/logs/postgres.log"
  [[ $(id -u) -eq 0 ]] && chown postgres "$RUN_DIR/logs/postgres.log"
  as_pg_user "$PG_BIN/pg_ctl" -D "$data" -l "$RUN_DIR/logs/postgres.log" -w -t "$START_TIMEOUT_SECS" \
    -o "-p $port -k $RUN_DIR/pgsocket -c listen_addresses=127.0.0.1 -c fsync=on -c jit=off" start >/dev/null \
    || { tail -n 20 "$RUN_DIR/logs/postgres.log" >&2; die "PostgreSQL did not start (log: $RUN_DIR/logs/postgres.log)"; }
  echo "$port" >"$RUN_DIR/ports/postgres"
  if ! as_pg_user "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U nisshi -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname='nisshi'" | grep -q 1; then
    as_pg_user "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U nisshi nisshi
  fi
  log "postgresql on 127.0.0.1:$port"
}

start_broker() {
  local storage="$1" pidfile="$RUN_DIR/pids/nisshi.pid"
  if is_running "$pidfile"; then return; fi
  [[ -x "$NISSHI_BIN" ]] || die "nisshi is not installed; run scripts/setup.sh (cargo +nightly install nisshi --version 0.8.1 --locked)"
  local port storage_url
  # Keep the broker's port across restarts so clients and tests can reconnect to it.
  if [[ -f "$RUN_DIR/ports/kafka" ]]; then port=$(cat "$RUN_DIR/ports/kafka"); else port=$(free_port); fi
  case "$storage" in
    postgres) start_postgres; storage_url="postgres://nisshi@127.0.0.1:$(cat "$RUN_DIR/ports/postgres")/nisshi" ;;
    memory) storage_url="memory://nisshi/" ;;
    *) die "unknown storage '$storage' (postgres or memory)" ;;
  esac
  setsid nohup "$NISSHI_BIN" broker \
    --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine "$storage_url" --group-initial-rebalance-delay 0s \
    >"$RUN_DIR/logs/nisshi.log" 2>&1 &
  echo $! >"$pidfile"
  echo "$port" >"$RUN_DIR/ports/kafka"
  echo "$storage" >"$RUN_DIR/storage"
  wait_for_port nisshi "$port" "$RUN_DIR/logs/nisshi.log"
  log "kafka-protocol broker (nisshi, $storage storage) on 127.0.0.1:$port"
}

print_env() {
  [[ -f "$RUN_DIR/ports/etcd" && -f "$RUN_DIR/ports/kafka" ]] || die "nothing is running in $RUN_DIR; run: $0 up"
  echo "export FRAMEFLEET_RUN_DIR=$RUN_DIR"
  echo "export FRAMEFLEET_ETCD_ENDPOINTS=http://127.0.0.1:$(cat "$RUN_DIR/ports/etcd")"
  echo "export FRAMEFLEET_KAFKA_BROKERS=127.0.0.1:$(cat "$RUN_DIR/ports/kafka")"
  echo "export FRAMEFLEET_BROKER_STORAGE=$(cat "$RUN_DIR/storage" 2>/dev/null || echo unknown)"
}

stop_pidfile() { # name pidfile
  if is_running "$2"; then
    local pid; pid=$(cat "$2")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    log "stopped $1"
  fi
  rm -f "$2"
}

cmd_up() {
  local storage="postgres"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --storage) storage="${2:?--storage needs postgres or memory}"; shift 2 ;;
      *) die "unknown option '$1' for up" ;;
    esac
  done
  mkdir -p "$RUN_DIR/logs" "$RUN_DIR/pids" "$RUN_DIR/ports"
  start_etcd
  start_broker "$storage"
  print_env | tee "$RUN_DIR/env"
}

cmd_down() {
  local purge=false
  [[ "${1:-}" == "--purge" ]] && purge=true
  [[ -d "$RUN_DIR" ]] || { log "nothing to stop in $RUN_DIR"; return; }
  stop_pidfile nisshi "$RUN_DIR/pids/nisshi.pid"
  stop_pidfile etcd "$RUN_DIR/pids/etcd.pid"
  if [[ -n "$PG_BIN" && -f "$RUN_DIR/postgres/postmaster.pid" ]]; then
    as_pg_user "$PG_BIN/pg_ctl" -D "$RUN_DIR/postgres" -m fast -w stop >/dev/null 2>&1 && log "stopped postgresql" || true
  fi
  if $purge; then rm -rf "$RUN_DIR"; log "removed $RUN_DIR"; fi
}

cmd_status() {
  for name in etcd nisshi; do
    if is_running "$RUN_DIR/pids/$name.pid"; then echo "$name: running (pid $(cat "$RUN_DIR/pids/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [[ -n "$PG_BIN" ]] && as_pg_user "$PG_BIN/pg_ctl" -D "$RUN_DIR/postgres" status >/dev/null 2>&1; then
    echo "postgresql: running"; else echo "postgresql: stopped"; fi
}

case "${1:-help}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  env) print_env ;;
  status) cmd_status ;;
  restart-broker) stop_pidfile nisshi "$RUN_DIR/pids/nisshi.pid"; start_broker "$(cat "$RUN_DIR/storage")" ;;
  stop-broker) stop_pidfile nisshi "$RUN_DIR/pids/nisshi.pid" ;;
  help | -h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (up, down, env, status)" ;;
esac
