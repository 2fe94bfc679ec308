# The framefleet ingestor: OpenCV (videoio, imgcodecs, imgproc) for cameras and streams, and
# FFmpeg's libraries for video files, as Debian 12 packages them.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install --yes --no-install-recommends \
      libopencv-core406 libopencv-imgproc406 libopencv-imgcodecs406 libopencv-videoio406 \
      libavcodec59 libavformat59 libavutil57 libswscale6 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 framefleet \
 && useradd --system --uid 10001 --gid framefleet --no-create-home --shell /usr/sbin/nologin framefleet
COPY bin/framefleet-ingestor /usr/local/bin/
COPY probe-metrics /usr/local/bin/
USER framefleet
ENV FRAMEFLEET_METRICS_ADDR=0.0.0.0:9465
EXPOSE 9465
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=4s --start-period=10s --retries=3 CMD ["probe-metrics", "9465"]
ENTRYPOINT ["framefleet-ingestor"]
