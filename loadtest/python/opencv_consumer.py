"""A hand-written OpenCV consumer of framefleet's frame topic, the load test's baseline
(loadtest/src/baseline.rs): per frame the worker's analysis (decode, integer area downscale,
BT.601 luma, 5x5 Gaussian blur, Sobel edges, scores, per-channel background and motion box),
one JSON result like the worker's on a results topic, the frame's offset stored only once its
result is delivered. Prints one JSON line of figures when it stops."""
import argparse, json, math, resource, time

import cv2
import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer

MAX_SIDE, MOTION_THRESHOLD, BACKGROUND_RATE = 480, 25, 0.05  # the worker's defaults
REDUCED = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}


def luma_of(jpeg, size, reduced_decode):
    """Luma (float32) at analysis size, the factor and the full (width, height). `size` is the
    channel's last frame size: the reduced decode needs the factor before it decodes."""
    factor = math.ceil(max(size) / MAX_SIDE) if size else 0
    if reduced_decode and factor in REDUCED:  # libjpeg scales in the DCT: far less work
        return cv2.imdecode(jpeg, REDUCED[factor]).astype(np.float32), factor, size
    image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    height, width = image.shape[:2]
    factor = max(1, math.ceil(max(width, height) / MAX_SIDE))
    if factor > 1:  # rows and columns that fill no whole block are cropped, as the worker does
        image = image[: height - height % factor, : width - width % factor]
        image = cv2.resize(image, (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32), factor, (width, height)


def analyse(luma, factor, size, background):
    blurred = cv2.GaussianBlur(luma, (5, 5), 0, borderType=cv2.BORDER_REPLICATE)
    gradient_x = cv2.Sobel(blurred, cv2.CV_32F, 1, 0, ksize=3, borderType=cv2.BORDER_REPLICATE)
    gradient_y = cv2.Sobel(blurred, cv2.CV_32F, 0, 1, ksize=3, borderType=cv2.BORDER_REPLICATE)
    if background is None or background.shape != blurred.shape:
        background = blurred.copy()  # a channel's first frame starts its background: no motion
    moving = (cv2.absdiff(blurred, background) >= MOTION_THRESHOLD).astype(np.uint8)
    cv2.accumulateWeighted(blurred, background, BACKGROUND_RATE)
    x, y, w, h = cv2.boundingRect(moving)
    box = None if w == 0 else {"x": x * factor, "y": y * factor, "width": min((x + w) * factor, size[0]) - x * factor,
                               "height": min((y + h) * factor, size[1]) - y * factor}
    scores = {"mean_luma": float(blurred.mean()), "contrast": float(luma.std()),
              "sharpness": float(cv2.absdiff(luma, blurred).mean()),
              "edge_strength": float(cv2.magnitude(gradient_x, gradient_y).mean()), "motion": float(moving.mean())}
    return scores, box, background


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    for flag in ("--brokers", "--topic", "--group", "--results-topic"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--frames", type=int, required=True, help="stop after this many frames")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="or after this many seconds without one")
    parser.add_argument("--reduced-decode", action="store_true", help="decode to grayscale at 1/2, 1/4 or 1/8 size")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    name = "python-opencv-reduced" if args.reduced_decode else "python-opencv"
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, "auto.offset.reset": "earliest",
                         "enable.auto.offset.store": False})  # stored below, once the result is delivered
    producer = Producer({"bootstrap.servers": args.brokers})
    consumer.subscribe([args.topic])

    def delivered(error, frame):
        if error is not None:
            raise KafkaException(error)
        consumer.store_offsets(message=frame)

    sizes, backgrounds, processed, first_at, last_frame_at = {}, {}, 0, None, time.monotonic()
    while processed < args.frames and time.monotonic() - last_frame_at < args.idle_timeout:
        frame = consumer.poll(0.2)
        producer.poll(0)  # serves delivery reports
        if frame is None:
            continue
        if frame.error():
            raise KafkaException(frame.error())
        last_frame_at = time.monotonic()
        if first_at is None:
            first_at, first_cpu = time.perf_counter(), time.process_time()
        headers = {key: value.decode() for key, value in frame.headers() or []}
        channel, started_us = headers["ff-channel"], time.time_ns() // 1000
        luma, factor, sizes[channel] = luma_of(np.frombuffer(frame.value(), np.uint8), sizes.get(channel),
                                               args.reduced_decode)
        scores, box, backgrounds[channel] = analyse(luma, factor, sizes[channel], backgrounds.get(channel))
        processed_us = time.time_ns() // 1000
        result = {"channel_id": channel, "sequence": int(headers["ff-seq"]), "ingestor_epoch": int(headers["ff-epoch"]),
                  "schema_version": int(headers["ff-schema-version"]), "capture_time_us": int(headers["ff-capture-us"]),
                  "processed_time_us": processed_us, "worker_id": name, "source_topic": frame.topic(),
                  "source_partition": frame.partition(), "source_offset": frame.offset(), "batch_size": 1,
                  "batch_compute_us": processed_us - started_us, "scores": scores, "motion_box": box}
        producer.produce(args.results_topic, json.dumps(result).encode(), key=frame.key(),
                         on_delivery=lambda error, _result, frame=frame: delivered(error, frame))
        processed += 1
    producer.flush()
    consumer.close()  # commits the stored offsets
    seconds = time.perf_counter() - first_at if first_at else 0.0
    cpu = time.process_time() - first_cpu if first_at else 0.0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"system": name, "frames": processed, "seconds": round(seconds, 3),
                      "frames_per_second": round(processed / seconds, 2) if seconds else 0.0,
                      "cpu_seconds": round(cpu, 3), "cpu_ms_per_frame": round(1000 * cpu / max(processed, 1), 3),
                      "process_cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3)}))


if __name__ == "__main__":
    main()
