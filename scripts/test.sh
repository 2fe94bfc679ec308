#!/usr/bin/env bash
# Runs every framefleet check: formatting, clippy, unit tests and the integration tests
# against real etcd, a real Kafka-protocol broker (nisshi on PostgreSQL) and real videos.
# Installs what is missing first (scripts/setup.sh). Infrastructure gets its own run
# directory and is stopped afterwards, whatever happens.
set -euo pipefail
# rustup installs cargo (and `cargo install` puts nisshi) here; a non-login shell may lack it.
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh

echo "== format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# No two modules of a crate may import each other (the layers stay layers).
scripts/module-cycles.py
# The test run's own tools, installed here on first use rather than by setup.sh, which the
# demo runs too: cargo-deny (≈ 3 min on 2 cores) and cargo-machete (≈ 1 min).
install_tool() { # crate version
  if [[ "$(cargo "${1#cargo-}" --version 2>/dev/null)" != *"$2"* ]]; then
    echo "== installing $1 $2 from crates.io (first time only)"
    cargo install "$1" --version "$2" --locked --quiet
  fi
}
install_tool cargo-deny 0.20.2
install_tool cargo-machete 0.9.2
# Every dependency's licence, source and bans (deny.toml), and no dependency left unused
# (the few used only through generated code or feature unification are listed, with why, in
# their Cargo.toml's [package.metadata.cargo-machete]).
cargo deny check --hide-inclusion-graph licenses bans sources
cargo machete

echo "== Kubernetes manifests"
deploy/kubernetes/validate.sh

export FRAMEFLEET_RUN_DIR="$PWD/.run/test"
deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
trap 'deploy/local/infra.sh down --purge' EXIT
eval "$(deploy/local/infra.sh up --storage postgres)"

echo "== tests (etcd $FRAMEFLEET_ETCD_ENDPOINTS, kafka $FRAMEFLEET_KAFKA_BROKERS on $FRAMEFLEET_BROKER_STORAGE)"
cargo test --workspace --locked "$@"

# The GPU device check's CPU half (the candle graph, i.e. the GPU path, on the CPU against
# the fused kernel over real frames), the fused CUDA kernels compiled to PTX for sm_90, and the
# PyTorch script compiled. The GPU half needs a GPU machine: see docs/gpu.md, "The device check".
echo "== device check, CPU half (scripts/device-check.sh --cpu-only)"
FRAMEFLEET_PROFILE=dev scripts/device-check.sh prepare --cpu-only
scripts/device-check.sh run --cpu-only

# The compose cluster: images from this build's binaries, then faults across hosts (worker,
# ingestor, leading coordinator, etcd member, one or both brokers and PostgreSQL killed; a
# worker frozen past its session timeout; a worker, an ingestor, the leader and an etcd member
# cut off the network, the leader from etcd alone; slow, lossy links to the brokers and to their
# storage), each checked by
# `framefleet audit` against the ledgers. FRAMEFLEET_SKIP_CLUSTER=1 leaves it out of a local run.
if [[ "${FRAMEFLEET_SKIP_CLUSTER:-0}" != 1 ]]; then
  echo "== cluster faults (deploy/compose/fault-suite.sh)"
  FRAMEFLEET_PROFILE=dev scripts/build-images.sh
  deploy/compose/fault-suite.sh
fi
