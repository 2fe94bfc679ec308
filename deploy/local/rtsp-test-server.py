#!/usr/bin/python3
"""A real RTSP server on loopback for tests and demos: GStreamer's gst-rtsp-server (Debian
packages gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-good, python3-gi) serving a live
test pattern as MJPEG over RTP.

    rtsp-test-server.py PORT [--path /cam] [--size 320x240] [--fps 15]

Prints "ready rtsp://127.0.0.1:PORT/cam" once listening; stops on SIGTERM/SIGINT. Killing and
restarting it on the same port is how tests make a camera disconnect and come back.
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--size", default="320x240")
    parser.add_argument("--fps", type=int, default=15)
    args = parser.parse_args()
    width, height = (int(part) for part in args.size.split("x"))

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(
        f"( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width={width},height={height},"
        f"framerate={args.fps}/1 ! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )
    # RTP/JPEG carries 4:2:0 only (I420 above); other layouts are refused as "Invalid component".
    # One pipeline for every client, so a reconnecting reader joins the same live stream.
    factory.set_shared(True)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 1
    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"ready rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
