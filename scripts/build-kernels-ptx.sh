#!/usr/bin/env bash
# Compiles the worker's fused CUDA kernels (worker/kernels/*.cu) to PTX for one GPU
# architecture with nvcc from NVIDIA's PyPI wheels (scripts/cuda-toolkit.sh): no GPU, driver
# or system CUDA needed, so CI checks that the kernels build. Fails if nvcc reports an error
# or warning, or if a kernel's entry point is missing from the PTX.
#   scripts/build-kernels-ptx.sh [COMPUTE_CAP]     (default 90 = H100/H200)
# Output: target/cuda/ptx/<kernel file>.sm_<cap>.ptx
set -euo pipefail
cd "$(dirname "$0")/.."
compute_cap="${1:-90}"
# shellcheck source=scripts/cuda-toolkit.sh
source scripts/cuda-toolkit.sh
cuda_toolkit >/dev/null
out=target/cuda/ptx
mkdir -p "$out"
for source in worker/kernels/*.cu; do
  ptx="$out/$(basename "${source%.cu}").sm_$compute_cap.ptx"
  echo "==> nvcc --ptx -arch=sm_$compute_cap $source"
  "$cuda_root/bin/nvcc" --ptx -arch="sm_$compute_cap" -O3 -Werror all-warnings \
    -I"$cuda_root/include" "$source" -o "$ptx"
  # Every extern "C" __global__ function must be a .entry of the PTX.
  for kernel in $(sed -n 's/^extern "C" __global__ void \([a-z_0-9]*\)(.*/\1/p' "$source"); do
    grep -q "^\.visible \.entry $kernel(" "$ptx" || { echo "no entry $kernel in $ptx" >&2; exit 1; }
    echo "    entry $kernel"
  done
done
