#!/usr/bin/env bash
# The load test: the paper's accumulate / consume / lag experiment (1/1, 2/2, 4/4 topics and
# workers), worker scaling and the baselines, through a real fleet on a local etcd and a
# Kafka-protocol broker (nisshi) with memory storage, as throughput runs should be. Installs
# what is missing first. Results (CSV, PNG, JSON, machine description) go to
# loadtest/results/, replacing the previous run's; the tables are printed at the end.
#
#   scripts/loadtest.sh                                   every scenario in loadtest/scenarios
#   scripts/loadtest.sh loadtest/scenarios/paper-1x1.toml one scenario
#   scripts/loadtest.sh --generation-secs 20              a quicker look
#   FRAMEFLEET_LOADTEST_PROFILE=release scripts/loadtest.sh   optimised build (a second build)
set -euo pipefail
# rustup installs cargo (and `cargo install` puts nisshi) here; a non-login shell may lack it.
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
profile="${FRAMEFLEET_LOADTEST_PROFILE:-dev}"
echo "== building framefleet-loadtest ($profile profile)"
cargo build --locked --profile "$profile" -p framefleet-loadtest --bin framefleet-loadtest
binary="target/$([[ "$profile" == dev ]] && echo debug || echo "$profile")/framefleet-loadtest"

export FRAMEFLEET_RUN_DIR="$PWD/.run/loadtest"
deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
trap 'deploy/local/infra.sh down --purge >/dev/null 2>&1 || true' EXIT
eval "$(deploy/local/infra.sh up --storage memory)"

# Not exec: the trap must stop the infrastructure after the run (also after Ctrl-C, which
# the load test handles itself: it stops its fleet and keeps the finished scenarios' files).
"$binary" "$@"
