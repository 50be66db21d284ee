"""LIVE ingest (service/live.py): a stream committed segment by segment, searchable while it runs, its video
"live" then "complete", or "interrupted" with what was committed kept when the stream breaks."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.live import LiveServer
from tests.server.streams import STREAM_SHAPES as SHAPES
from tests.server.streams import Feed, frames_of, search


@pytest.fixture(scope="module")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("live")
    s = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir)
    yield s
    s.stop()


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


def send_until_commit(
    stub: pb_grpc.VideoSearchStub, feed: Feed, media_s: float, on_reached: Callable[[], None] | None = None
) -> tuple[str, int]:
    """Stream until a commit reaches `media_s`, then break the stream (`on_reached`, by default dropping the
    connection); -> (upload_id, committed bytes)."""
    call = stub.Ingest(iter(feed), timeout=120)
    upload_id, committed = "", 0
    for ev in call:
        if ev.WhichOneof("event") == "accepted":
            upload_id = ev.accepted.upload_id
        if ev.WhichOneof("event") == "committed":
            committed = ev.committed.bytes
            if ev.committed.media_s >= media_s:
                (on_reached or call.cancel)()
                break
    feed.release.set()
    return upload_id, committed


def resume(stub: pb_grpc.VideoSearchStub, video_id: str, data: bytes, upload_id: str, offset: int) -> pb.IngestDone:
    header = pb.IngestHeader(
        video_id=video_id, mode=pb.INGEST_MODE_LIVE, segment_s=1.0, resume_upload_id=upload_id, resume_offset=offset
    )
    requests = [pb.IngestRequest(header=header)]
    requests += [pb.IngestRequest(chunk=data[i : i + 8192]) for i in range(offset, len(data), 8192)]
    events = list(stub.Ingest(iter(requests), timeout=120))
    accepted = events[0].accepted
    assert accepted.upload_id == upload_id and accepted.offset == offset and accepted.media_s > 0
    assert events[-1].WhichOneof("event") == "done", events[-1]
    return events[-1].done


def test_a_dropped_stream_resumes_where_the_server_stands(server: LiveServer, stream_bytes: bytes) -> None:
    with grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        whole = Feed("cam-whole", stream_bytes, hold_at=1 << 30, segment_s=1.0)
        list(stub.Ingest(iter(whole), timeout=120))
        feed = Feed("cam-resumed", stream_bytes, hold_at=len(stream_bytes) // 2, segment_s=1.0)
        upload_id, committed = send_until_commit(stub, feed, 5.0)
        assert upload_id and 0 < committed < len(stream_bytes)
        # the wrong offset, an unknown upload: precise refusals that name what to do
        for uid, offset, code, words in (
            (upload_id, committed + 1, grpc.StatusCode.FAILED_PRECONDITION, f"resume from offset {committed}"),
            ("nope", committed, grpc.StatusCode.NOT_FOUND, "no live upload"),
        ):
            with pytest.raises(grpc.RpcError) as e:
                resume(stub, "cam-resumed", stream_bytes, uid, offset)
            assert e.value.code() == code and words in (e.value.details() or ""), e.value.details()
        done = resume(stub, "cam-resumed", stream_bytes, upload_id, committed)
        assert done.video.state == "complete" and done.frames == 16
        assert done.video.size_bytes == len(stream_bytes)  # every byte stored once
        # the same frames as the unbroken stream: none missing, none twice
        assert frames_of(stub, "cam-resumed") == frames_of(stub, "cam-whole")


def test_a_stream_resumes_after_the_server_is_killed(
    shapes_model_dir: Path, stream_bytes: bytes, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = LiveServer(shapes_model_dir, f"embedded:{data}", tmp_path)
    try:
        with grpc.insecure_channel(first.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            list(stub.Ingest(iter(Feed("whole", stream_bytes, hold_at=1 << 30, segment_s=1.0)), timeout=120))
            feed = Feed("killed", stream_bytes, hold_at=len(stream_bytes) // 2, segment_s=1.0)
            # killed mid-stream, between commits
            upload_id, committed = send_until_commit(stub, feed, 4.0, lambda: first.stop(sig_kill=True))
    finally:
        first.stop(sig_kill=True)
    second = LiveServer(shapes_model_dir, f"embedded:{data}", tmp_path)
    try:
        with grpc.insecure_channel(second.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            video = stub.GetVideo(pb.GetVideoRequest(video_id="killed"), timeout=30)
            assert video.size_bytes >= committed  # what was reported committed is there
            assert video.state == "interrupted"  # its stream died with the first server
            done = resume(stub, "killed", stream_bytes, upload_id, video.size_bytes)
            assert done.video.state == "complete" and done.frames == 16
            assert frames_of(stub, "killed") == frames_of(stub, "whole")
    finally:
        second.stop()
