# The Kafka-protocol broker of the local cluster: nisshi 0.8.1 (crates.io), since Apache Kafka
# cannot be fetched on framefleet's build machines. scripts/build-images.sh copies the binary
# setup.sh installed. Storage: PostgreSQL (`STORAGE_ENGINE=postgres://…`); several brokers with
# one `CLUSTER_ID` on the same database form one cluster.
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 nisshi \
 && useradd --system --uid 10001 --gid nisshi --no-create-home --shell /usr/sbin/nologin nisshi
COPY bin/nisshi /usr/local/bin/
USER nisshi
# glibc's malloc, as nisshi uses it: a fixed mmap threshold, so a record batch of a frame or
# more (hundreds of KiB) is mapped and returned to the kernel when freed instead of raising the
# threshold and fragmenting one heap per thread; two arenas for the runtime's threads.
ENV LISTENER_URL=tcp://0.0.0.0:9092 \
    MALLOC_ARENA_MAX=2 \
    MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 9092
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9092"]
ENTRYPOINT ["nisshi", "broker"]
