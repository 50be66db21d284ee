"""A real RTSP server for the pull tests: GStreamer's gst-rtsp-server serving a Matroska H.264 file at
rtsp://127.0.0.1:PORT/cam, in real time, from its start for each new session.

Runs under the system Python, which has PyGObject (Debian: python3-gi gir1.2-gst-rtsp-server-1.0
gstreamer1.0-plugins-base gstreamer1.0-plugins-good):
    /usr/bin/python3 tests/rtsp_server.py PORT FILE.mkv     (prints "ready" once it listens)
    /usr/bin/python3 tests/rtsp_server.py --check           (exit 0 when everything it needs is installed)
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

PIPELINE = "( filesrc location={path} ! matroskademux ! rtph264pay name=pay0 pt=96 config-interval=1 )"


def main() -> int:
    Gst.init(None)
    if sys.argv[1:] == ["--check"]:
        missing = [e for e in ("filesrc", "matroskademux", "rtph264pay") if Gst.ElementFactory.find(e) is None]
        print("missing GStreamer elements:", *missing) if missing else print("ok")
        return 1 if missing else 0
    port, path = sys.argv[1], sys.argv[2]
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(port)
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE.format(path=path))
    factory.set_shared(True)
    server.get_mount_points().add_factory("/cam", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{port}", flush=True)
        return 1
    print("ready", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
