#!/usr/bin/env bash
# The worker's memory over a long backlog drain: the ingestor writes a backlog of real video
# (Debian's vtest.avi, looped, 640×480 JPEG), then one framefleet-worker (release build) drains
# it inside a cgroup CPU quota small enough that the drain lasts about ten minutes, while its
# resident set (VmRSS) is sampled every 10 s. Prints a CSV line per sample (seconds, RSS in
# MiB; also in .run/worker-memory/logs/rss.csv) and the trend: the mean RSS over the second
# half of the drain against the first, after a 20-s warm-up.
#
#   scripts/worker-memory.sh                   15 000 frames, worker quota 0.03 CPU (≈ 10 min)
#   FRAMES=3000 QUOTA=0.05 scripts/worker-memory.sh   a quicker look
#
# Needs root for the cgroup (v2 cpu.max, or v1 cpu.cfs_quota_us).
set -euo pipefail
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$PWD"
FRAMES="${FRAMES:-15000}"
QUOTA="${QUOTA:-0.03}"

scripts/setup.sh
cargo build --locked --release --bins
BIN="$REPO_ROOT/target/release"

export FRAMEFLEET_RUN_DIR="$REPO_ROOT/.run/worker-memory"
deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
eval "$(deploy/local/infra.sh up --storage memory)"
LOGS="$FRAMEFLEET_RUN_DIR/logs"
mkdir -p "$LOGS"

if ! grep -qw cpu /sys/fs/cgroup/cgroup.controllers 2>/dev/null; then
  CGROUP=/sys/fs/cgroup/cpu/framefleet-worker-memory
  mkdir -p "$CGROUP"
  echo 100000 >"$CGROUP/cpu.cfs_period_us"
  awk -v q="$QUOTA" 'BEGIN { printf "%d\n", q * 100000 }' >"$CGROUP/cpu.cfs_quota_us"
else
  CGROUP=/sys/fs/cgroup/framefleet-worker-memory
  mkdir -p "$CGROUP"
  awk -v q="$QUOTA" 'BEGIN { printf "%d 100000\n", q * 100000 }' >"$CGROUP/cpu.max"
fi

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  rmdir "$CGROUP" 2>/dev/null || true
  deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BIN/framefleet-coordinator" --listen 127.0.0.1:0 --ready-file "$FRAMEFLEET_RUN_DIR/coordinator.addr" \
  >"$LOGS/coordinator.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do [[ -s "$FRAMEFLEET_RUN_DIR/coordinator.addr" ]] && break; sleep 0.1; done
export FRAMEFLEET_COORDINATOR="http://$(cat "$FRAMEFLEET_RUN_DIR/coordinator.addr")"

echo "== writing a backlog of $FRAMES frames"
"$BIN/framefleet-ingestor" --ingestor-id memory-ingestor --width 640 --height 480 --encoding jpeg \
  --max-frames "$FRAMES" \
  --channel "memory=file:///usr/share/doc/opencv-doc/examples/data/vtest.avi?loop=true" \
  >"$LOGS/ingestor.log" 2>&1

echo "== draining with one worker in a quota of $QUOTA CPU"
sh -c 'echo $$ > "$0" && exec "$@"' "$CGROUP/cgroup.procs" \
  "$BIN/framefleet-worker" --worker-id memory-worker >"$LOGS/worker.log" 2>&1 &
WORKER=$!
PIDS+=("$WORKER")

# `watch` prints the fleet's progress every second; the drain is over once the worker has
# processed every frame of the backlog.
"$BIN/framefleet" watch --timeout-secs 3600 >"$LOGS/watch.log" 2>&1 &
PIDS+=($!)
processed() { tail -n 1 "$LOGS/watch.log" | awk '{ for (i = 1; i < NF; i++) if ($i == "processed") print $(i + 1) }'; }
# Before `watch` has printed its first line there is no count yet: nothing is drained.
drained() {
  local count
  count=$(processed)
  ((${count:-0} >= FRAMES))
}
echo "seconds,rss_mib" | tee "$LOGS/rss.csv"
started=$SECONDS
while kill -0 "$WORKER" 2>/dev/null && ! drained; do
  rss_kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$WORKER/status")
  echo "$((SECONDS - started)),$(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }')" | tee -a "$LOGS/rss.csv"
  sleep 10
done
tail -n 1 "$LOGS/watch.log"
# Single samples swing by ±10 MiB with the batch in flight, so the trend is the mean of the
# second half of the drain against the first (after the 20-s warm-up).
awk -F, 'NR > 1 && $1 >= 20 { n++; rss[n] = $2; if ($2 > peak) peak = $2; if (min == "" || $2 < min) min = $2 }
  END {
    if (n < 2) { print "RSS: the drain ended before two samples after the warm-up; no trend to report"; exit }
    half = int(n / 2)
    for (i = 1; i <= n; i++) { if (i <= half) first += rss[i]; else second += rss[i] }
    first /= half; second /= n - half
    printf "RSS after warm-up: %.1f–%.1f MiB; mean %.1f MiB over the first half of the drain, %.1f MiB over the second: %+.1f %%\n", min, peak, first, second, 100 * (second - first) / first
  }' "$LOGS/rss.csv"
