#!/usr/bin/env bash
# Sourced by the CUDA build scripts: `cuda_toolkit WHEEL…` fetches NVIDIA's CUDA 13.0 toolkit
# wheels from PyPI (nothing is installed system-wide; pip caches the downloads) into
# $FRAMEFLEET_CUDA_TOOLKIT_DIR (default .run/cuda), unpacks them and sets `cuda_root` to the
# toolkit root (bin/nvcc, include/, lib/). Always includes nvcc and what nvcc itself needs.
# CUDA 13.0.x is pinned: nvcc 13.5 makes cudarc 0.19 (candle's CUDA binding) panic.
cuda_toolkit() {
  local toolkit_dir="${FRAMEFLEET_CUDA_TOOLKIT_DIR:-.run/cuda}" wheel
  mkdir -p "$toolkit_dir/wheels" "$toolkit_dir/root"
  echo "==> CUDA 13.0 toolkit wheels into $toolkit_dir"
  python3 -m pip download --quiet --no-deps -d "$toolkit_dir/wheels" \
    "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
    "nvidia-cuda-runtime==13.0.*" "$@"
  for wheel in "$toolkit_dir"/wheels/*.whl; do
    python3 -m zipfile -e "$wheel" "$toolkit_dir/root/"
  done
  cuda_root="$(cd "$toolkit_dir/root/nvidia/cu13" && pwd)"
  chmod +x "$cuda_root"/bin/* "$cuda_root"/bin/crt/* "$cuda_root"/nvvm/bin/* 2>/dev/null || true
}
