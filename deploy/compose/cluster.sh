#!/usr/bin/env bash
# The compose cluster of deploy/compose/docker-compose.yml.
#   cluster.sh up [--workers N] [--ingestors N]
#                                 build missing images, start everything, wait until healthy
#   cluster.sh down               stop and remove containers, network and volumes
#   cluster.sh cli ARGS…          run the framefleet CLI on the cluster's network
# COMPOSE_PROJECT_NAME picks the cluster (default framefleet), so several can coexist.
set -euo pipefail
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-framefleet}"
compose() { docker-compose --project-directory "$HERE" -f "$HERE/docker-compose.yml" "$@"; }
log() { echo "cluster: $*" >&2; }

# The cluster's TLS certificates, one set per project: a CA of its own and a certificate for
# each kind of server, naming the hosts clients dial: the brokers (`kafka`, each broker's host
# name), the coordinators, the etcd members and PostgreSQL (and 127.0.0.1, for their health
# checks). The
# coordinators' certificate is also their client certificate for etcd, and etcd's its members'
# for each other. The containers run as uid 10001 (etcd as its own user), so the keys are
# readable by all: these are throwaway certificates of a local cluster, made again after `down`.
export FRAMEFLEET_COMPOSE_CERTS="${FRAMEFLEET_COMPOSE_CERTS:-$ROOT/.run/compose/$COMPOSE_PROJECT_NAME/certs}"
make_certificate() { # name subjectAltName extendedKeyUsage
  openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1"
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$2" "$3" >"$1.cnf"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -out "$1.pem" -extfile "$1.cnf"
}
make_certificates() {
  local dir="$FRAMEFLEET_COMPOSE_CERTS"
  [[ -s "$dir/postgres.pem" && -s "$dir/ca.pem" ]] && return 0
  mkdir -p "$dir"
  (
    cd "$dir"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.pem \
      -subj "/CN=framefleet compose CA ($COMPOSE_PROJECT_NAME)"
    make_certificate kafka DNS:kafka,DNS:broker,DNS:broker-2 serverAuth
    make_certificate coordinator DNS:coordinator-1,DNS:coordinator-2,IP:127.0.0.1 serverAuth,clientAuth
    make_certificate etcd DNS:etcd-1,DNS:etcd-2,DNS:etcd-3,IP:127.0.0.1 serverAuth,clientAuth
    make_certificate postgres DNS:postgres,IP:127.0.0.1 serverAuth
    # Nothing signs anything later: the CA's key is not kept, let alone mounted.
    rm -f ca.key ca.srl ./*.csr ./*.cnf
    chmod 644 ./*.key ./*.pem
  ) >"$dir/openssl.log" 2>&1 || { log "cannot make the certificates; see $dir/openssl.log"; exit 1; }
  log "TLS certificates in $dir"
}
make_certificates

wait_healthy() {
  local deadline=$((SECONDS + ${1:-180})) unhealthy
  while ((SECONDS < deadline)); do
    unhealthy="$(compose ps -q | xargs -r docker inspect --format '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' \
      | grep -v -E ' (healthy|running)$' || true)"
    [[ -z "$unhealthy" ]] && return 0
    sleep 2
  done
  log "not healthy after ${1:-180} s: $unhealthy"
  return 1
}

case "${1:-}" in
  up)
    shift
    workers=2 ingestors=1
    while (($#)); do
      case "$1" in
        --workers) workers="$2"; shift 2 ;;
        --ingestors) ingestors="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
      esac
    done
    "$ROOT/scripts/docker-up.sh"
    missing=()
    for service in coordinator ingestor worker cli nisshi etcd postgres; do
      docker image inspect "framefleet-$service:latest" >/dev/null 2>&1 || missing+=("$service")
    done
    ((${#missing[@]} == 0)) || "$ROOT/scripts/build-images.sh" "${missing[@]}"
    compose up -d --scale "worker=$workers" --scale "ingestor=$ingestors"
    wait_healthy 240
    log "up: $(compose ps --services | tr '\n' ' ')"
    ;;
  down) compose down --volumes --remove-orphans --timeout 10; rm -rf "$FRAMEFLEET_COMPOSE_CERTS" ;;
  cli) shift; compose run --rm -T cli "$@" ;;
  wait-healthy) wait_healthy "${2:-180}" ;;
  compose) shift; compose "$@" ;;
  *) echo "usage: $0 up [--workers N] [--ingestors N] | down | cli ARGS… | wait-healthy [SECS] | compose ARGS…" >&2; exit 2 ;;
esac
