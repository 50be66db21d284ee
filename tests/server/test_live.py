"""LIVE ingest (service/live.py): a stream committed segment by segment, searchable while it runs, its video
"live" then "complete", or "interrupted" with what was committed kept when the stream breaks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]


@pytest.fixture(scope="module")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    s = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def stream_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """16 s of MPEG-TS: red circle 0-4 s, blue square 4-8 s, green triangle 8-12 s, yellow cross 12-16 s."""
    path = tmp_path_factory.mktemp("ts") / "cam.ts"
    write_shapes_video(path, SHAPES, seconds_each=4.0, fps=10, codec="h264")
    return path.read_bytes()


class Feed:
    """Requests of a live stream: the header, then the bytes in small chunks, holding after `hold_at` bytes
    until released (a camera that keeps its connection open)."""

    def __init__(self, video_id: str, data: bytes, hold_at: int, **header: object) -> None:
        self.header = pb.IngestHeader(video_id=video_id, mode=pb.INGEST_MODE_LIVE, **header)  # type: ignore[arg-type]
        self.data, self.hold_at = data, hold_at
        self.release = threading.Event()

    def __iter__(self) -> Iterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=self.header)
        for i in range(0, len(self.data), 8192):
            if i >= self.hold_at:
                self.release.wait(60)
            yield pb.IngestRequest(chunk=self.data[i : i + 8192])


def search(stub: pb_grpc.VideoSearchStub, text: str, video_id: str, **filters: object) -> list[pb.Moment]:
    f = pb.SearchFilters(video_ids=[video_id], **filters)  # type: ignore[arg-type]
    return list(stub.Search(pb.SearchRequest(text=text, top_k=5, filters=f), timeout=30).moments)


def test_a_live_stream_is_searchable_while_it_runs_then_complete(server: LiveServer, stream_bytes: bytes) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        feed = Feed("cam-live", stream_bytes, hold_at=len(stream_bytes) // 2, segment_s=1.0)
        events = stub.Ingest(iter(feed), timeout=120)
        committed: list[pb.IngestCommitted] = []
        for ev in events:
            if ev.WhichOneof("event") == "committed":
                committed.append(ev.committed)
                if ev.committed.media_s >= 3.0 and not feed.release.is_set():
                    # mid-stream: the first seconds are stored and searchable, the video is live
                    video = stub.GetVideo(pb.GetVideoRequest(video_id="cam-live"), timeout=30)
                    assert video.state == "live" and video.frames >= 3
                    hits = search(stub, "a red circle", "cam-live")
                    assert hits and 0 <= hits[0].start_s < 4  # the red circle, already searchable
                    assert search(stub, "a red circle", "cam-live", complete_only=True) == []
                    feed.release.set()
            if ev.WhichOneof("event") == "done":
                done = ev.done
        assert feed.release.is_set(), "no commit came before the stream's second half was sent"
        media = [c.media_s for c in committed]
        assert media == sorted(media) and len(committed) >= 8  # about one commit per second of video
        assert done.video.state == "complete" and done.frames == 16
        assert committed[-1].bytes == len(stream_bytes) and done.video.size_bytes == len(stream_bytes)
        # every second is there once, and the moments follow the schedule
        for (color, shape), start in zip(SHAPES, (0, 4, 8, 12), strict=True):
            hits = search(stub, f"a {color} {shape}", "cam-live", complete_only=True)
            assert hits and start <= hits[0].start_s < start + 4, (color, shape, hits[:1])


def test_a_broken_stream_keeps_its_committed_segments(server: LiveServer, stream_bytes: bytes) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        feed = Feed("cam-broken", stream_bytes, hold_at=len(stream_bytes) // 2, segment_s=1.0)
        call = stub.Ingest(iter(feed), timeout=120)
        for ev in call:
            if ev.WhichOneof("event") == "committed" and ev.committed.media_s >= 3.0:
                call.cancel()  # the camera's link drops
                break
        feed.release.set()
        video = None
        for _ in range(100):
            video = stub.GetVideo(pb.GetVideoRequest(video_id="cam-broken"), timeout=30)
            if video.state == "interrupted":
                break
            threading.Event().wait(0.1)
        assert video is not None and video.state == "interrupted", video
        assert 3 <= video.frames < 16
        assert search(stub, "a red circle", "cam-broken")  # what was committed stays searchable


def test_bad_live_input(server: LiveServer, stream_bytes: bytes) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        garbage = Feed("cam-garbage", bytes(range(256)) * 400, hold_at=1 << 30)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(iter(garbage), timeout=60))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "byte" in (e.value.details() or "")
        with pytest.raises(grpc.RpcError) as e:
            stub.GetVideo(pb.GetVideoRequest(video_id="cam-garbage"), timeout=30)
        assert e.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was committed
        for header, words in (({"segment_s": 1000.0}, "segment_s must be between"), ({"sha256": "a" * 64}, "sha256")):
            bad = Feed("cam-bad", stream_bytes, hold_at=1 << 30, **header)
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Ingest(iter(bad), timeout=60))
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (e.value.details() or "")


def test_deleting_a_live_video_ends_its_stream(server: LiveServer, stream_bytes: bytes) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        feed = Feed("cam-deleted", stream_bytes, hold_at=len(stream_bytes) // 2, segment_s=1.0)
        call = stub.Ingest(iter(feed), timeout=120)
        with pytest.raises(grpc.RpcError) as e:
            for ev in call:
                if ev.WhichOneof("event") == "committed" and not feed.release.is_set():
                    stub.DeleteVideo(pb.DeleteVideoRequest(video_id="cam-deleted"), timeout=30)
                    feed.release.set()
        assert e.value.code() == grpc.StatusCode.ABORTED and "deleted while it was streaming" in (
            e.value.details() or ""
        )
        with pytest.raises(grpc.RpcError):
            stub.GetVideo(pb.GetVideoRequest(video_id="cam-deleted"), timeout=30)
