#!/usr/bin/env bash
# The load test: the paper's accumulate / consume / lag experiment (1/1, 2/2, 4/4 topics and
# workers), worker scaling and the baselines (the worker binary against a hand-written
# Python/OpenCV consumer, each pinned to one core), through a real fleet on a local etcd and a
# Kafka-protocol broker (nisshi) with memory storage, as throughput runs should be. Installs
# what is missing first (Debian packages, nisshi, the Python venv of .run/venv). Results (CSV, PNG, JSON, machine description) go to
# loadtest/results/, replacing the previous run's; the tables are printed at the end.
#
#   scripts/loadtest.sh                                   every scenario in loadtest/scenarios
#   scripts/loadtest.sh loadtest/scenarios/paper-1x1.toml one scenario
#   scripts/loadtest.sh --generation-secs 20              a quicker look
#   FRAMEFLEET_LOADTEST_PROFILE=dev scripts/loadtest.sh   reuse the test build (slower workers)
#
# Built with the release profile by default: the figures are speed figures.
set -euo pipefail
# rustup installs cargo (and `cargo install` puts nisshi) here; a non-login shell may lack it.
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/setup.sh
# The baselines' hand-written Python/OpenCV consumer runs in this venv (made once, from PyPI).
FRAMEFLEET_BASELINE_PYTHON="$(scripts/python-baseline-env.sh)"
export FRAMEFLEET_BASELINE_PYTHON
# The detection scenario's TensorFlow / ONNX Runtime consumers run in a venv of their own.
FRAMEFLEET_DETECT_PYTHON="$(scripts/python-baseline-env.sh detect)"
export FRAMEFLEET_DETECT_PYTHON
profile="${FRAMEFLEET_LOADTEST_PROFILE:-release}"
# The baselines run the worker binary as a process of its own, found beside the load test's.
echo "== building framefleet-loadtest and framefleet-worker ($profile profile)"
cargo build --locked --profile "$profile" -p framefleet-loadtest --bin framefleet-loadtest \
  -p framefleet-worker --bin framefleet-worker
binary="target/$([[ "$profile" == dev ]] && echo debug || echo "$profile")/framefleet-loadtest"

export FRAMEFLEET_RUN_DIR="$PWD/.run/loadtest"
deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
trap 'deploy/local/infra.sh down --purge >/dev/null 2>&1 || true' EXIT
eval "$(deploy/local/infra.sh up --storage memory)"

# Not exec: the trap must stop the infrastructure after the run (also after Ctrl-C, which
# the load test handles itself: it stops its fleet and keeps the finished scenarios' files).
"$binary" "$@"
