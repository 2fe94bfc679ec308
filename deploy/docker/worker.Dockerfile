# The framefleet worker (CPU build: candle's CPU backend, libjpeg-turbo linked in). The CUDA
# variant is worker-cuda.Dockerfile.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet-worker /usr/local/bin/
COPY probe-metrics /usr/local/bin/
USER framefleet
# librdkafka allocates fetched frames with glibc's malloc (Rust's allocations use mimalloc): a
# fixed mmap threshold returns a frame's buffer to the kernel when freed, and two arenas for
# librdkafka's broker threads keep their heaps from growing one per thread.
ENV FRAMEFLEET_METRICS_ADDR=0.0.0.0:9466 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 9466
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 CMD ["probe-metrics", "9466"]
ENTRYPOINT ["framefleet-worker"]
