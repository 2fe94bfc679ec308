#!/usr/bin/env bash
# Creates the Python virtualenv of the load test's hand-written OpenCV consumer
# (loadtest/python/opencv_consumer.py) under .run/venv, with the packages pinned in
# loadtest/python/requirements.txt from PyPI; skips whatever is already there. Prints the
# venv's python on stdout, so a caller can write
#
#   python=$(scripts/python-baseline-env.sh)
#
# `scripts/python-baseline-env.sh detect` does the same for the person-detection baselines
# (detect_consumer.py, TensorFlow and ONNX Runtime): .run/venv-detect, requirements-detect.txt.
#
# Needs python3 with the venv module (Debian: python3-venv, which scripts/setup.sh installs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

case "${1:-}" in
  "") venv="$PWD/.run/venv" requirements="loadtest/python/requirements.txt" ;;
  detect) venv="$PWD/.run/venv-detect" requirements="loadtest/python/requirements-detect.txt" ;;
  *) echo "usage: $0 [detect]" >&2; exit 2 ;;
esac
log() { echo "python-baseline-env: $*" >&2; }

if [[ ! -x "$venv/bin/python" ]]; then
  log "creating $venv with $(command -v python3) ($(python3 --version 2>&1))"
  if ! python3 -m venv "$venv" >&2; then
    rm -rf "$venv"
    log "error: python3 -m venv failed; on Debian install python3-venv (scripts/setup.sh does)"
    exit 1
  fi
fi
# The pins of the requirements file against what the venv holds: pip only runs when they differ.
if ! "$venv/bin/python" - "$requirements" <<'PYTHON' 2>/dev/null; then
import sys
from importlib.metadata import version
pins = [line.split("#")[0].strip() for line in open(sys.argv[1])]
sys.exit(any(pin and version(pin.split("==")[0]) != pin.split("==")[1] for pin in pins))
PYTHON
  log "installing $(grep -v '^#' "$requirements" | xargs) from PyPI"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --requirement "$requirements" >&2
fi
echo "$venv/bin/python"
