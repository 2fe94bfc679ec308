# The framefleet worker built with `--features cuda` (scripts/build-worker-cuda.sh), on NVIDIA's
# CUDA runtime image. Nothing can be pulled on framefleet's build machines, so this image is
# built on a user's machine with registry access:
#   docker build -f deploy/docker/worker-cuda.Dockerfile -t framefleet-worker-cuda <staging dir>
# The host needs the NVIDIA driver and Container Toolkit (`docker run --gpus all …`).
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet-worker-cuda /usr/local/bin/framefleet-worker
COPY probe-metrics /usr/local/bin/
USER framefleet
ENV FRAMEFLEET_METRICS_ADDR=0.0.0.0:9466 \
    FRAMEFLEET_DEVICE=auto
EXPOSE 9466
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=20s --retries=3 CMD ["probe-metrics", "9466"]
ENTRYPOINT ["framefleet-worker"]
