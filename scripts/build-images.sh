#!/usr/bin/env bash
# Builds framefleet's container images from deploy/docker/*.Dockerfile: coordinator, ingestor,
# worker and CLI, plus the broker (nisshi), etcd and PostgreSQL images the compose cluster runs.
#
# The binaries are built once, here, in the workspace's target dir (profile $FRAMEFLEET_PROFILE,
# default release) and copied into the images. Every Dockerfile starts FROM debian:bookworm-slim;
# where that image cannot be pulled (no registry on framefleet's build machines) it is made
# locally: debootstrap of Debian 12 (minbase) imported with `docker import` under that tag, so
# the same Dockerfiles build here and on a machine with Docker Hub.
#
# Usage: scripts/build-images.sh [service…]   (default: all; tags framefleet-<service>:latest)
set -euo pipefail
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PROFILE="${FRAMEFLEET_PROFILE:-release}"
BASE_IMAGE=debian:bookworm-slim
MIRROR="${FRAMEFLEET_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ALL_SERVICES=(coordinator ingestor worker cli nisshi etcd postgres)
SERVICES=("$@")
((${#SERVICES[@]})) || SERVICES=("${ALL_SERVICES[@]}")

log() { echo "images: $*" >&2; }
die() { echo "images: error: $*" >&2; exit 1; }
sudo_if_needed() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }

scripts/docker-up.sh

target_dir() {
  cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'
}
case "$PROFILE" in
  release) profile_dir=release; profile_args=(--release) ;;
  dev) profile_dir=debug; profile_args=() ;;
  *) profile_dir="$PROFILE"; profile_args=(--profile "$PROFILE") ;;
esac
BIN="$(target_dir)/$profile_dir"
CONTEXT="$(target_dir)/images/context"

log "building the binaries ($PROFILE profile)"
cargo build "${profile_args[@]}" --locked -p framefleet-coordinator -p framefleet-ingestor \
  -p framefleet-worker -p framefleet-cli

log "staging the build context in $CONTEXT"
rm -rf "$CONTEXT"
mkdir -p "$CONTEXT/bin"
for binary in framefleet-coordinator framefleet-ingestor framefleet-worker framefleet; do
  cp "$BIN/$binary" "$CONTEXT/bin/"
done
NISSHI_BIN="${NISSHI_BIN:-$(command -v nisshi || echo "$HOME/.cargo/bin/nisshi")}"
[[ -x "$NISSHI_BIN" ]] || die "nisshi is not installed; run scripts/setup.sh"
cp "$NISSHI_BIN" "$CONTEXT/bin/nisshi"
cp deploy/docker/probe-metrics deploy/docker/postgres-entrypoint "$CONTEXT/"

# The base: Docker Hub's where it can be pulled, otherwise Debian 12 bootstrapped here.
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  if timeout 60 docker pull "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulled $BASE_IMAGE"
  else
    command -v debootstrap >/dev/null || die "debootstrap is missing; run scripts/setup.sh"
    rootfs="$(target_dir)/images/bookworm-rootfs"
    log "no registry: bootstrapping $BASE_IMAGE from $MIRROR (minbase; a few minutes, once)"
    sudo_if_needed rm -rf "$rootfs"
    sudo_if_needed debootstrap --variant=minbase bookworm "$rootfs" "$MIRROR" >"$(target_dir)/images/debootstrap.log" 2>&1 \
      || die "debootstrap failed; see $(target_dir)/images/debootstrap.log"
    # As Docker's debian:*-slim: no package cache, no docs.
    sudo_if_needed rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
      "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
    sudo_if_needed tar -C "$rootfs" -c . | docker import \
      --change 'CMD ["bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      - "$BASE_IMAGE" >/dev/null
    sudo_if_needed rm -rf "$rootfs"
    log "imported $BASE_IMAGE"
  fi
fi

for service in "${SERVICES[@]}"; do
  dockerfile="deploy/docker/$service.Dockerfile"
  [[ -f "$dockerfile" ]] || die "no $dockerfile (services: ${ALL_SERVICES[*]})"
  log "building framefleet-$service"
  build_log="$(target_dir)/images/$service.build.log"
  if ! docker build --file "$dockerfile" --tag "framefleet-$service:latest" "$CONTEXT" >"$build_log" 2>&1; then
    tail -n 20 "$build_log" >&2
    die "building framefleet-$service failed; see $build_log"
  fi
done
log "built: $(printf 'framefleet-%s ' "${SERVICES[@]}")"
