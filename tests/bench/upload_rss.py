"""Peak memory of the server process for one large UPLOAD: VmHWM of a real server (its own process, embedded
store) before and after the upload, read from /proc. Shows whether the final transaction holds the video's
bytes in memory (the peak grows by about the upload's size) or writes the blob from the spool.

    PYTHONPATH=server:export:clients/python python -m tests.bench.upload_rss [--mib 200]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import av
import numpy as np

from moments_client import Client
from tests.conftest import ensure_shapes_model
from tests.live import LiveServer


def hwm_kib(pid: int) -> tuple[int, int]:
    """(VmHWM, VmRSS) in KiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmHWM"].split()[0]), int(fields["VmRSS"].split()[0])


def write_big_video(path: Path, mib: int) -> int:
    """MJPEG of noise (incompressible, every frame a keyframe: sampling decodes 1 frame a second)."""
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mjpeg", rate=10)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuvj420p"
        stream.options = {"q:v": "2"}
        noise = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(4)]
        i = written = 0
        while written < mib * 1024**2:
            frame = av.VideoFrame.from_ndarray(noise[i % 4], format="rgb24")
            for packet in stream.encode(frame):
                written += packet.size
                out.mux(packet)
            i += 1
        for packet in stream.encode():
            out.mux(packet)
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = work / "big.avi"
        size = write_big_video(video, args.mib)
        server = LiveServer(ensure_shapes_model(), f"embedded:{work / 'data'}", work)
        try:
            before = hwm_kib(server.proc.pid)
            with Client(server.target) as client:
                done = client.ingest(video, "big", fps=0.5)
            after = hwm_kib(server.proc.pid)
        finally:
            server.stop()
    print(
        json.dumps(
            {
                "upload_mib": round(size / 1024**2, 1),
                "frames": done.frames,
                "vm_hwm_mib_before": round(before[0] / 1024, 1),
                "vm_hwm_mib_after": round(after[0] / 1024, 1),
                "peak_growth_mib": round((after[0] - before[0]) / 1024, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
