# The framefleet admin CLI (`docker run --rm framefleet-cli --coordinator http://… status`).
FROM debian:bookworm-slim
RUN groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet /usr/local/bin/
USER framefleet
ENTRYPOINT ["framefleet"]
