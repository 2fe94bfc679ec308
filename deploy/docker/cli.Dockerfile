# The framefleet admin CLI (`docker run --rm framefleet-cli --coordinator http://… status`).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet /usr/local/bin/
USER framefleet
ENTRYPOINT ["framefleet"]
