"""The clients' LIVE ingest: the Python client from an iterator of bytes (committed events as they come) and
`moments ingest - --live --id ...` from standard input, against the live server of these tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from moments_client import Client
from moments_client.sample_video import write_shapes_video
from moments_client.types import IngestCommitted, IngestDone
from tests.clients.conftest import TOKEN
from tests.live import LiveServer


@pytest.fixture(scope="module")
def ts_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("live-ts") / "cam.ts"
    write_shapes_video(path, [("red", "circle"), ("blue", "square")], seconds_each=4.0, fps=10, codec="h264")
    return path.read_bytes()


def chunks(data: bytes, size: int = 4096) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def test_python_client_live_ingest(server: LiveServer, ts_bytes: bytes) -> None:
    with Client(server.target, token=TOKEN) as client:
        events = list(client.ingest_events(chunks(ts_bytes), "py-live", live=True, segment_s=2.0, filename="cam.ts"))
        committed = [e for e in events if isinstance(e, IngestCommitted)]
        done = events[-1]
        assert isinstance(done, IngestDone) and done.video.state == "complete" and done.frames == 8
        assert [c.segments for c in committed] == list(range(1, len(committed) + 1))
        assert [c.media_s for c in committed][:4] == [2.0, 4.0, 6.0, 8.0]  # one commit per 2 s segment
        assert committed[-1].bytes == len(ts_bytes)
        assert client.get_video("py-live").state == "complete"
        hits = client.search("a blue square", top_k=3, video_ids=["py-live"])
        assert hits and 4 <= hits[0].start_s < 8


def test_cli_live_ingest_from_stdin(server: LiveServer, ts_bytes: bytes) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update({"MOMENTS_TARGET": server.target, "MOMENTS_TOKEN": TOKEN, "NO_COLOR": "1"})
    args = ["ingest", "-", "--live", "--id", "cli-live", "--segment-s", "1", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "moments_client.cli", *args], input=ts_bytes, env=env, capture_output=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr.decode()
    summary = json.loads(proc.stdout)
    assert summary == {"video_id": "cli-live", "state": "complete", "frames": 8, "duration_s": 8.0}
    stderr = proc.stderr.decode()
    assert "committed" in stderr and "8 frames" in stderr  # progress: committed media time and lag
    usage = subprocess.run(
        [sys.executable, "-m", "moments_client.cli", "ingest", "-", "--live"], input=b"", env=env, capture_output=True
    )
    assert usage.returncode == 2 and b"--id" in usage.stderr
