# etcd from Debian 12 (3.4), for the compose cluster's three-member metadata store. Runs as
# the `etcd` user Debian's package creates.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends etcd-server etcd-client \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/etcd-data && chown etcd:etcd /var/lib/etcd-data
USER etcd
WORKDIR /var/lib/etcd-data
EXPOSE 2379 2380
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 \
  CMD ["etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"]
ENTRYPOINT ["etcd"]
