"""Writes consecutive frames of a video as JPEG files, resized, for the device check
(scripts/device-check.sh): `<out>/<W>x<H>-<index>.jpg`, encoded as the ingestor encodes
(OpenCV, the given quality).

    python video_frames.py VIDEO OUT --count 32 --size 640x480 --size 1920x1080 [--quality 90]
"""

import argparse
import pathlib
import sys

import cv2


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video")
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("--count", type=int, default=32)
    parser.add_argument("--size", action="append", required=True, help="WxH, repeatable")
    parser.add_argument("--quality", type=int, default=90)
    args = parser.parse_args()
    sizes = [tuple(int(part) for part in size.split("x")) for size in args.size]
    capture = cv2.VideoCapture(args.video)
    if not capture.isOpened():
        print(f"video_frames: cannot open {args.video}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    written = 0
    while written < args.count:
        ok, frame = capture.read()
        if not ok:
            break
        for width, height in sizes:
            resized = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
            path = args.out / f"{width}x{height}-{written:04d}.jpg"
            cv2.imwrite(str(path), resized, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        written += 1
    if written < args.count:
        print(f"video_frames: {args.video} has only {written} frames", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
