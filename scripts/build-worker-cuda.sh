#!/usr/bin/env bash
# Builds the CUDA worker (`framefleet-worker --features cuda`) on a machine with no GPU and no
# CUDA toolkit installed, for a GPU machine to run. The toolkit comes from NVIDIA's PyPI wheels
# (CUDA 13.0.x: nvcc 13.5 makes cudarc 0.19 panic). libcuda.so comes with the NVIDIA driver and
# is not in any wheel, so the build links against an empty stub that carries its name
# (libcuda.so.1) and leaves the driver's symbols to be bound when the binary starts on the GPU
# machine, where the real libcuda.so.1 is loaded.
#
# Usage: scripts/build-worker-cuda.sh [COMPUTE_CAP]   (default 90 = H100/H200)
# Output: target/cuda/release/framefleet-worker, framefleet-ops-check and framefleet-detect-check
# (the device check)
# The GPU machine needs: the NVIDIA driver (libcuda.so.1) and the CUDA 13 runtime libraries
# this script copies next to the binary (target/cuda/release/cuda-libs: cudart, cublas,
# cublasLt, curand, nvrtc); run with LD_LIBRARY_PATH=<that folder>.
set -euo pipefail
cd "$(dirname "$0")/.."
compute_cap="${1:-90}"
# shellcheck source=scripts/cuda-toolkit.sh
source scripts/cuda-toolkit.sh
cuda_toolkit "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" "nvidia-cublas==13.0.*" "nvidia-curand"
mkdir -p "${FRAMEFLEET_CUDA_TOOLKIT_DIR:-.run/cuda}/link"

echo "==> link folder: unversioned names for the wheels' libraries, and the libcuda stub"
link_dir="$(cd "${FRAMEFLEET_CUDA_TOOLKIT_DIR:-.run/cuda}/link" && pwd)"
for library in "$cuda_root"/lib/lib*.so.*; do
  name="$(basename "$library")"
  ln -sf "$library" "$link_dir/${name%%.so.*}.so"
done
echo 'void framefleet_libcuda_stub(void) {}' > "$link_dir/stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link_dir/libcuda.so" "$link_dir/stub.c"

echo "==> cargo build --release -p framefleet-worker --features cuda (CUDA_COMPUTE_CAP=$compute_cap)"
export PATH="$cuda_root/bin:$PATH"
export CUDA_ROOT="$cuda_root" CUDA_PATH="$cuda_root" CUDA_HOME="$cuda_root"
export CUDA_COMPUTE_CAP="$compute_cap"
export NVCC_PREPEND_FLAGS="-I$cuda_root/include"
export LIBRARY_PATH="$link_dir${LIBRARY_PATH:+:$LIBRARY_PATH}"
# The stub defines none of the driver's functions: those references stay open and are bound
# to the real libcuda.so.1 when the worker starts on the GPU machine. The stub satisfies no
# symbol, so the linker would drop it under --as-needed; --no-as-needed keeps libcuda.so.1 in
# the binary's needed libraries, which is what makes the loader bring in the driver.
export RUSTFLAGS="-L $link_dir -C link-arg=-Wl,--unresolved-symbols=ignore-in-object-files"
for binary in framefleet-worker framefleet-ops-check framefleet-detect-check; do
  cargo rustc --release --locked -p framefleet-worker --bin "$binary" --features cuda \
    --target-dir target/cuda -- -C link-arg=-Wl,--no-as-needed,-lcuda,--as-needed
done

mkdir -p target/cuda/release/cuda-libs
cp -L "$cuda_root"/lib/libcudart.so.13 "$cuda_root"/lib/libcublas.so.13 "$cuda_root"/lib/libcublasLt.so.13 \
  "$cuda_root"/lib/libcurand.so.10 "$cuda_root"/lib/libnvrtc.so.13 "$cuda_root"/lib/libnvrtc-builtins.so.13.0 \
  target/cuda/release/cuda-libs/
echo "==> target/cuda/release/framefleet-worker (+ cuda-libs/); on the GPU machine:"
echo "    LD_LIBRARY_PATH=target/cuda/release/cuda-libs target/cuda/release/framefleet-worker --device cuda ..."
