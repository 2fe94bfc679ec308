#!/usr/bin/env bash
# A long run of the compose cluster: 8 synthetic cameras at 10 frames/s through one ingestor,
# workers joining and leaving (2 ↔ 3 every 5 minutes), and one fault of the fault suite drawn at
# random every few minutes (those that leave the one ingestor running). Every service's memory
# is sampled all along (its own memory, without the kernel's file cache: memory-sample.py). At
# the end `framefleet audit` must find an outcome for every frame Kafka acknowledged, the
# ledgers no failed delivery, and no service's memory may trend: after a warm-up (processes
# growing from their start to their working set), the mean of the second half of the run
# within 10 % of the first half's.
#   deploy/compose/soak.sh [--minutes N] [--fault-every SECONDS] [--seed N] [--warm-up-minutes N]
#                          (default: 30 minutes, a fault every 180 s, 5 minutes of warm-up)
# Writes $OUT/soak.md (the table for the docs), soak-memory.csv and soak-events.csv, and exits 1
# when any check fails, a fault's own check or the cluster's health after a fault included.
# Not part of scripts/test.sh: it takes half an hour.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-ffsoak$$}"
OUT="${FRAMEFLEET_SOAK_OUT:-$ROOT/target/soak}"
MINUTES=30 FAULT_EVERY=180 SEED=$$ FPS=10 CAMERAS=8 SAMPLE_EVERY=15 SCALE_EVERY=300 WARM_UP_MINUTES=5
while (($#)); do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --fault-every) FAULT_EVERY="$2"; shift 2 ;;
    --seed) SEED="$2"; shift 2 ;;
    --warm-up-minutes) WARM_UP_MINUTES="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (--help lists them)" >&2; exit 2 ;;
  esac
done
# The faults that leave the run's one ingestor running (its own kill and partition end or
# restart the run, which the fault suite checks on its own).
SOAK_FAULTS=(worker-kill leader-kill etcd-member-kill broker-kill brokers-kill postgres-kill worker-pause
  worker-partition leader-partition leader-etcd-partition etcd-member-partition broker-slow-network
  broker-slow-storage)
FRAMES=$((FPS * 60 * MINUTES))
RANDOM=$SEED

cluster() { "$HERE/cluster.sh" "$@"; }
compose() { cluster compose "$@"; }
log() { echo "soak: [$(( (SECONDS - started) / 60 ))m$(( (SECONDS - started) % 60 ))s] $*" >&2; }
started=$SECONDS
# shellcheck source=deploy/compose/faults.sh
source "$HERE/faults.sh"

mkdir -p "$OUT"
cleanup() {
  compose logs --no-color >"$OUT/soak-cluster.log" 2>&1 || true
  cluster down >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$ROOT/scripts/docker-up.sh"
cluster up --workers 0 --ingestors 0 >/dev/null
compose up -d --scale worker=2 --no-recreate worker >/dev/null
cluster wait-healthy 120
NETWORK="${COMPOSE_PROJECT_NAME}_fleet"

phase=soak
channels=()
for camera in $(seq 1 "$CAMERAS"); do channels+=("--channel=soak-cam-$camera=synthetic://320x240@$FPS"); done
INGESTOR="${COMPOSE_PROJECT_NAME}-ingestor-soak"
compose run -d -T --name "$INGESTOR" ingestor --ingestor-id=ingestor-soak "${channels[@]}" \
  --pace=realtime "--max-frames=$FRAMES" >/dev/null
log "$CAMERAS cameras × $FPS frames/s for $MINUTES minutes ($((CAMERAS * FRAMES)) frames); a fault every $FAULT_EVERY s (seed $SEED)"

echo "seconds,container,memory_mib,anon_mib,shmem_mib,usage_mib,started_at" >"$OUT/soak-memory.csv"
echo "seconds,event" >"$OUT/soak-events.csv"
echo "seconds,pid,client,backend_start,anon_kib,rss_kib" >"$OUT/soak-postgres.csv"
echo "seconds,container,heap_inuse_mib,heap_idle_mib,heap_released_mib,keys" >"$OUT/soak-etcd.csv"
event() { log "$1"; echo "$((SECONDS - started)),$1" >>"$OUT/soak-events.csv"; }

# One memory sample of every container of the cluster and of the run's ingestor (what the
# service itself holds, and docker stats' figure with the file cache: memory-sample.py).
sample_memory() {
  local ids
  ids="$( (compose ps -q; docker ps -q --filter "name=^${INGESTOR}$") | sort -u)"
  [[ -n "$ids" ]] || return 0
  # shellcheck disable=SC2086
  "$HERE/memory-sample.py" "$((SECONDS - started))" $ids >>"$OUT/soak-memory.csv" || true
}

# Once a minute, what is inside the two services memory-sample.py cannot explain: PostgreSQL's
# backends one by one, and each etcd member's Go heap (memory-detail.py).
next_detail=0
sample_detail() {
  ((SECONDS >= next_detail)) || return 0
  next_detail=$((SECONDS + 60))
  # shellcheck disable=SC2046
  "$HERE/memory-detail.py" "$((SECONDS - started))" "$OUT" $(compose ps -q postgres) \
    $(compose ps -q etcd-1 etcd-2 etcd-3) || true
}

running() { [[ "$(docker inspect --format '{{.State.Running}}' "$INGESTOR" 2>/dev/null)" == true ]]; }

next_fault=$((SECONDS + FAULT_EVERY))
next_scale=$((SECONDS + SCALE_EVERY))
workers=2 faults=0 failed_faults=0 unhealthy=0
while running; do
  sample_memory
  sample_detail
  if ((SECONDS >= next_fault)); then
    fault="${SOAK_FAULTS[RANDOM % ${#SOAK_FAULTS[@]}]}"
    event "fault: $fault"
    faults=$((faults + 1))
    if ! inject "$fault" "$INGESTOR"; then
      failed_faults=$((failed_faults + 1)); event "fault $fault: its own check failed"
    fi
    if ! cluster wait-healthy 120 >/dev/null 2>&1; then
      unhealthy=$((unhealthy + 1)); event "not healthy 120 s after $fault"
    fi
    next_fault=$((SECONDS + FAULT_EVERY))
  fi
  if ((SECONDS >= next_scale)); then
    workers=$((workers == 2 ? 3 : 2))
    compose up -d --scale "worker=$workers" --no-recreate worker >/dev/null 2>&1
    event "workers: $workers"
    next_scale=$((SECONDS + SCALE_EVERY))
  fi
  sleep "$SAMPLE_EVERY"
done
event "the ingestor finished; waiting for every frame's outcome"

# The audit of the acknowledged frames (the frame topics hold every frame of the run: reading
# them all back would take longer than the check is worth here; the fault suite does that).
report=""
deadline=$((SECONDS + 600))
while ((SECONDS < deadline)); do
  if report="$(compose run --rm -T cli --json audit --channel-prefix soak- --read-timeout-secs 300 2>/dev/null)"; then
    python3 -c 'import json,sys; sys.exit(not all(run["source_finished"] in (True, None) for run in json.loads(sys.argv[1])["runs"]))' \
      "$report" && break
  fi
  sleep 10
done
event "audit done"
# Each PostgreSQL backend's memory contexts, into PostgreSQL's log (kept in soak-cluster.log):
# what a backend that grew holds.
compose exec -T postgres psql -h 127.0.0.1 -U nisshi -d nisshi -Atc \
  "select count(pg_log_backend_memory_contexts(pid)) from pg_stat_activity
   where backend_type = 'client backend' and pid <> pg_backend_pid()" >/dev/null 2>&1 || true
sleep 2

python3 - "$OUT" "$report" "$CAMERAS" "$FRAMES" "$MINUTES" "$faults" "$failed_faults" "$WARM_UP_MINUTES" "$unhealthy" <<'PY'
import csv, json, re, statistics, sys
out, report, cameras, frames, minutes, faults, failed_faults, warm_up_minutes, unhealthy = sys.argv[1], json.loads(sys.argv[2] or "{}"), *map(int, sys.argv[3:])
runs = report.get("runs", [])
total = lambda field: sum(run.get(field) or 0 for run in runs)
missing = report.get("frames_missing", -1)
samples = list(csv.DictReader(open(f"{out}/soak-memory.csv")))
# Each container's memory is judged over one life of its process: a container a fault killed
# and restarted grows from zero again, which compared half against half reads as a trend (or
# hides one). Its longest life is judged. In each life the samples of the first
# `warm_up_minutes` are kept in the CSV but left out (a process growing from its start to its
# working set is not a leak); the halves split what is left. A life with fewer than 3 samples
# in a half is too short to judge: that passes only for a worker that joined or left during the
# run (absent from the first or the last sample); a service there from start to end whose every
# life is that short restarted again and again — a crash loop — and fails the check.
run_start = min((int(row["seconds"]) for row in samples), default=0)
run_end = max((int(row["seconds"]) for row in samples), default=0)
lives = {}
for row in samples:
    lives.setdefault(row["container"], {}).setdefault(row.get("started_at") or "", []).append(
        (int(row["seconds"]), float(row["memory_mib"]), float(row["usage_mib"])))
def halves(points, middle, column):
    first = [point[column] for point in points if point[0] < middle]
    second = [point[column] for point in points if point[0] >= middle]
    return statistics.mean(first), statistics.mean(second)
rows, trending, unjudged, unjudgeable = [], [], [], []
for container, by_start in sorted(lives.items()):
    # Compose names containers <project>_<service>_<n>; the run's ingestor <project>-ingestor-soak.
    name = re.sub(r"^[a-z0-9]+[_-]", "", container)
    judged = []
    for points in by_start.values():
        warm = points[0][0] + warm_up_minutes * 60
        points = [point for point in points if point[0] >= warm]
        if points:
            judged.append(points)
    points = max(judged, key=len, default=[])
    middle = (points[0][0] + points[-1][0]) / 2 if points else 0
    if sum(point[0] < middle for point in points) < 3 or sum(point[0] >= middle for point in points) < 3:
        unjudged.append(f"{name} ({len(by_start)} lives)")
        seen = [point[0] for life in by_start.values() for point in life]
        if min(seen) == run_start and max(seen) == run_end:
            unjudgeable.append(container)
        continue
    before, after = halves(points, middle, 1)
    trend = after / before - 1 if before else 0.0
    if trend > 0.10:
        trending.append(container)
    usage_before, usage_after = halves(points, middle, 2)
    span = f"{points[0][0] / 60:.0f}–{points[-1][0] / 60:.0f}"
    rows.append((name, len(by_start), span, before, after, trend, usage_before, usage_after))
lines = [
    f"Soak: {cameras} cameras × {frames // (minutes * 60)} frames/s for {minutes} minutes, {faults} faults "
    f"({failed_faults} whose own check failed), workers 2 ↔ 3 every 5 minutes.",
    "",
    "| frames the cameras gave | captured | acknowledged | failed deliveries | resent copies | processed | dead-lettered | duplicates | without an outcome |",
    "|---|---|---|---|---|---|---|---|---|",
    f"| {cameras * frames} | {total('frames_captured')} | {total('frames_acknowledged')} | {total('frames_failed')} | "
    f"{total('frames_resent')} | {total('frames_processed')} | {total('frames_dead_lettered')} | {total('duplicates')} | {missing} |",
    "",
    f"Memory (MiB, mean of each half of the minutes judged: each container's longest life, less its first {warm_up_minutes}",
    "minutes): the service's own (anonymous + shared; the check) and docker stats' usage, which adds the file cache the",
    "kernel keeps for it.",
    "",
    "| container | lives | minutes judged | own, first half | own, second half | trend | docker stats, first half | second half |",
    "|---|---|---|---|---|---|---|---|",
] + [f"| {name} | {count} | {span} | {before:.0f} | {after:.0f} | {trend:+.1%} | {usage_before:.0f} | {usage_after:.0f} |"
     for name, count, span, before, after, trend, usage_before, usage_after in rows] + (
    ["", "Too short a life to judge: " + ", ".join(unjudged) + "."] if unjudged else [])
# Inside PostgreSQL and etcd (memory-detail.py): not checked, the figures that explain them;
# a sample it could not read must not cost the run's verdict.
def detail_tables():
    lines = []
    backends = {}
    for row in csv.DictReader(open(f"{out}/soak-postgres.csv")):
        backends.setdefault(int(row["seconds"]), []).append(int(row["anon_kib"]) / 1024)
    if backends:
        lines += ["", "PostgreSQL's client backends (private memory, MiB), per 5-minute window: count, median, largest.", "",
                  "| minutes | backends | median | largest |", "|---|---|---|---|"]
        for window in range(0, max(backends) // 300 + 1):
            last = max((s for s in backends if s // 300 == window), default=None)
            if last is not None:
                sizes = sorted(backends[last])
                lines.append(f"| {window * 5}–{window * 5 + 5} | {len(sizes)} | {statistics.median(sizes):.1f} | {sizes[-1]:.1f} |")
    heaps = {}
    for row in csv.DictReader(open(f"{out}/soak-etcd.csv")):
        heaps.setdefault(re.sub(r"^[a-z0-9]+[_-]", "", row["container"]), []).append(
            (int(row["seconds"]), float(row["heap_inuse_mib"]), float(row["heap_idle_mib"]) - float(row["heap_released_mib"]), int(row["keys"])))
    if heaps:
        lines += ["", "etcd's Go heap (MiB; first sample → last): in use, held idle; keys.", "",
                  "| member | heap in use | idle, not released | keys |", "|---|---|---|---|"]
        for name, points in sorted(heaps.items()):
            first, last = points[0], points[-1]
            lines.append(f"| {name} | {first[1]:.0f} → {last[1]:.0f} | {first[2]:.0f} → {last[2]:.0f} | {first[3]} → {last[3]} |")
    return lines
try:
    lines += detail_tables()
except (OSError, ValueError, KeyError) as error:
    lines += ["", f"(PostgreSQL and etcd detail unavailable: {error})"]
open(f"{out}/soak.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
problems = []
if missing != 0:
    problems.append(f"{missing} frames without an outcome")
if total("frames_failed"):
    problems.append(f"{total('frames_failed')} failed deliveries")
if total("frames_acknowledged") < cameras * frames:
    problems.append(f"{total('frames_acknowledged')} of {cameras * frames} frames acknowledged")
if trending:
    problems.append("memory trending up: " + ", ".join(trending))
if unjudgeable:
    problems.append("no life long enough to judge (restarted again and again): " + ", ".join(unjudgeable))
# A fault whose own check failed (two leaders, failed status calls, …) or a cluster that did not
# come back healthy is a failed soak even when every frame got its outcome.
if failed_faults:
    problems.append(f"{failed_faults} faults whose own check failed")
if unhealthy:
    problems.append(f"the cluster not healthy 120 s after {unhealthy} faults")
if problems:
    print("soak failed: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
