# The framefleet coordinator (gRPC control plane). Its binary needs only glibc, libgcc, zlib
# and OpenSSL's libssl3 (librdkafka's TLS to the brokers). The CLI rides along for the health
# probe (grpc.health.v1 through `framefleet health`).
# Build context: the staging folder scripts/build-images.sh fills (bin/ holds the binaries
# built once on the host).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet-coordinator bin/framefleet /usr/local/bin/
USER framefleet
ENV FRAMEFLEET_LISTEN=0.0.0.0:50051 \
    FRAMEFLEET_METRICS_ADDR=0.0.0.0:9464
EXPOSE 50051 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 \
  CMD ["framefleet", "--coordinator", "http://127.0.0.1:50051", "--timeout-secs", "3", "health"]
ENTRYPOINT ["framefleet-coordinator"]
