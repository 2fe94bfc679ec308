# PostgreSQL 15 from Debian 12: the broker's storage in the compose cluster. The data directory
# is initialised on first start (trust authentication on the cluster's private network only).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/framefleet-pg /run/postgresql \
 && chown postgres:postgres /var/lib/framefleet-pg /run/postgresql
COPY postgres-entrypoint /usr/local/bin/
USER postgres
# glibc's malloc in every backend (forked from the postmaster, so they inherit it): a fixed
# mmap threshold, so a block of 128 KiB or more is mapped and returned to the kernel when freed
# (glibc otherwise raises its threshold to each such block freed, and later ones stay in the
# backend's heap). The soak's PostgreSQL growth is elsewhere: docs/faults.md#soak.
ENV PGDATA=/var/lib/framefleet-pg/data \
    MALLOC_MMAP_THRESHOLD_=131072
EXPOSE 5432
STOPSIGNAL SIGINT
HEALTHCHECK --interval=3s --timeout=3s --start-period=10s --retries=5 \
  CMD ["/usr/lib/postgresql/15/bin/pg_isready", "-h", "127.0.0.1", "-U", "nisshi"]
ENTRYPOINT ["postgres-entrypoint"]
