#!/usr/bin/env bash
# Makes sure a Docker engine answers: if `docker info` fails (a fresh shell or CI where the
# daemon was not started), starts dockerd in the background and waits for it.
set -euo pipefail
docker info >/dev/null 2>&1 && exit 0
command -v dockerd >/dev/null || { echo "docker-up: no Docker engine installed (dockerd)" >&2; exit 1; }
sudo_if_needed() { if ((EUID == 0)); then "$@"; else sudo "$@"; fi; }
log_file="${TMPDIR:-/tmp}/framefleet-dockerd.log"
echo "docker-up: starting dockerd (log: $log_file)" >&2
sudo_if_needed nohup dockerd >"$log_file" 2>&1 &
for _ in $(seq 1 60); do
  docker info >/dev/null 2>&1 && exit 0
  sleep 0.5
done
echo "docker-up: dockerd did not come up in 30 s; see $log_file" >&2
exit 1
