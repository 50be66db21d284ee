"""Real network sources on loopback for the pull tests: a folder served over HTTP (an HLS playlist) and
GStreamer's RTSP server (tests/rtsp_server.py, under the system Python) that can go away and come back."""

from __future__ import annotations

import contextlib
import functools
import http.server
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moments_client.sample_video import write_shapes_video
from tests.live import REPO, free_port

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SCRIPT = REPO / "tests" / "rtsp_server.py"
# PyAV's hls muxer: 2 s segments, every one listed, and EXT-X-ENDLIST (a source with an end)
HLS_VOD = {"hls_time": "2", "hls_list_size": "0", "hls_playlist_type": "vod"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: Path) -> Iterator[str]:
    """A real HTTP server for `folder` on loopback; -> its base URL."""
    handler = functools.partial(QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@contextlib.contextmanager
def serve_hls(folder: Path, shapes: list[tuple[str, str]]) -> Iterator[str]:
    """A VOD playlist of 2 s segments of `shapes` (4 s each) written to `folder` and served; -> its URL."""
    write_shapes_video(folder / "index.m3u8", shapes, seconds_each=4.0, fps=10, options=HLS_VOD)
    with serve_folder(folder) as base:
        yield f"{base}/index.m3u8"


def rtsp_server_available() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    probe = subprocess.run([SYSTEM_PYTHON, str(RTSP_SCRIPT), "--check"], capture_output=True, timeout=60)
    return probe.returncode == 0


needs_rtsp = pytest.mark.skipif(
    not rtsp_server_available(),
    reason="needs GStreamer's RTSP server (apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good)",
)


class RtspServer:
    """tests/rtsp_server.py on a port: a camera that can be switched off and on again at the same address."""

    def __init__(self, video: Path, log: Path, port: int = 0) -> None:
        self.video, self.log = video, log
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SCRIPT), str(self.port), str(self.video)], stdout=out, stderr=out
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(self.log.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
