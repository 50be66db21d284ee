"""The clients' LIVE ingest: the Python client from an iterator of bytes (committed events as they come) and
`moments ingest - --live --id ...` from standard input, against the live server of these tests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from PIL import Image

from moments_client import AsyncClient, Client, Frame
from moments_client.sample_video import write_shapes_video
from moments_client.types import IngestAccepted, IngestCommitted, IngestDone
from moments_shapes import draw
from tests.clients.conftest import TOKEN
from tests.live import LiveServer, Relay


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
        hits = client.search("a blue square", top_k=3, video_ids=["py-live"], complete_only=True)
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


@pytest.mark.parametrize("flavour", ["sync", "async", "async-iterable"])
def test_live_ingest_resumes_itself_after_a_dropped_link(server: LiveServer, ts_bytes: bytes, flavour: str) -> None:
    """The link drops after the first commit: the client resumes on its own (same upload, from the offset the
    server committed) and the video ends complete with the frames and bytes of an unbroken stream. AsyncClient
    reads an iterator in a worker thread, and an async iterable (whose pieces it splits into chunks) in the loop."""
    relay = Relay(server.target)
    committed = threading.Event()
    cut_done = threading.Event()
    video_id = f"py-resume-{flavour}"

    def source() -> Iterator[bytes]:
        for i, piece in enumerate(chunks(ts_bytes)):
            if i * 4096 >= len(ts_bytes) // 2 and not cut_done.is_set():
                assert committed.wait(60), "no commit before the middle of the stream"
                relay.cut()
                cut_done.set()
            yield piece
            time.sleep(0.002)

    def note(event: object) -> None:
        if isinstance(event, IngestCommitted):
            committed.set()

    try:
        if flavour == "sync":
            with Client(relay.target, token=TOKEN) as client:
                events = []
                for event in client.ingest_events(source(), video_id, live=True, segment_s=1.0, filename="c.ts"):
                    note(event)
                    events.append(event)
        else:

            async def pieces() -> AsyncIterator[bytes]:  # the same bytes, from an async iterable
                it = source()
                while piece := await asyncio.to_thread(next, it, b""):
                    yield piece

            async def run() -> list:
                async with AsyncClient(relay.target, token=TOKEN) as client:
                    out = []
                    # an async iterable's 4 KiB pieces are split into chunks of 1000 bytes
                    upload, size = (pieces(), 1000) if flavour == "async-iterable" else (source(), 256 * 1024)
                    async for event in client.ingest_events(
                        upload, video_id, live=True, segment_s=1.0, chunk_size=size
                    ):
                        note(event)
                        out.append(event)
                    return out

            events = asyncio.run(run())
    finally:
        relay.close()
    assert cut_done.is_set()
    accepted = [e for e in events if isinstance(e, IngestAccepted)]
    assert len(accepted) >= 2 and accepted[1].upload_id == accepted[0].upload_id  # it resumed, same upload
    assert accepted[1].offset > 0
    done = events[-1]
    assert isinstance(done, IngestDone) and done.video.state == "complete"
    with Client(server.target, token=TOKEN) as client:
        video = client.get_video(video_id)
        assert (video.frames, video.size_bytes, video.state) == (8, len(ts_bytes), "complete")
        seconds = sorted(
            m.best_frame_s
            for text in ("a red circle", "a blue square")
            for m in client.search(text, top_k=8, video_ids=[video_id]).moments
            if (m.best_frame_s < 4) == (text == "a red circle")
        )
        assert seconds == [float(s) for s in range(8)]  # every second once: nothing lost, nothing twice


def test_async_frames_resume_themselves_after_a_dropped_link(server: LiveServer) -> None:
    """AsyncClient's FRAMES stream from an async iterable: the link drops after a commit, the client resumes
    on its own (same upload) and every frame is stored once."""
    frames = []
    for i in range(16):
        png = io.BytesIO()
        Image.fromarray(draw(*(("red", "circle") if i < 8 else ("blue", "square")), 128, rng=i)).save(png, "PNG")
        frames.append(Frame(png.getvalue(), float(i)))
    relay = Relay(server.target)

    async def run() -> list:
        committed = asyncio.Event()

        async def source() -> AsyncIterator[Frame]:
            for i, frame in enumerate(frames):
                if i == 8:
                    await asyncio.wait_for(committed.wait(), 60)
                    relay.cut()
                yield frame

        async with AsyncClient(relay.target, token=TOKEN) as client:
            out = []
            async for event in client.ingest_frames_events(source(), "py-frames-resume", segment_s=2.0):
                if isinstance(event, IngestCommitted):
                    committed.set()
                out.append(event)
            return out

    try:
        events = asyncio.run(run())
    finally:
        relay.close()
    accepted = [e for e in events if isinstance(e, IngestAccepted)]
    assert len(accepted) >= 2 and {a.upload_id for a in accepted} == {accepted[0].upload_id}, accepted
    assert accepted[1].offset > 0
    assert isinstance(events[-1], IngestDone) and events[-1].video.state == "complete"
    with Client(server.target, token=TOKEN) as client:
        video = client.get_video("py-frames-resume")
        assert (video.frames, video.state) == (16, "complete")
        seconds = sorted(
            m.best_frame_s
            for text in ("a red circle", "a blue square")
            for m in client.search(text, top_k=8, video_ids=["py-frames-resume"]).moments
        )
        assert seconds == [float(s) for s in range(16)]  # every second once: nothing lost, nothing twice
