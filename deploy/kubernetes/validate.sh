#!/usr/bin/env bash
# Validates the Kubernetes manifests offline (deploy/kubernetes/validate.py) with the PyPI
# package kubernetes-validate (pinned in requirements.txt), installed into .run/venv-kubernetes
# the first time.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
venv="$ROOT/.run/venv-kubernetes"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/pip" freeze 2>/dev/null | grep -qxF -f "$HERE/requirements.txt"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt"
fi
exec "$venv/bin/python" "$HERE/validate.py" "$HERE"
