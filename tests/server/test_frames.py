"""FRAMES ingest: pictures sampled by the sender, committed in segments like LIVE, resumable, checked frame by
frame; and the expiry of idle streams (upload_ttl_s)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import av
import grpc
import numpy as np
import pytest
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import Client, Frame, IngestAccepted, IngestCommitted, MomentsError
from tests.live import LiveServer, Relay
from tests.server.streams import STREAM_SHAPES as SHAPES
from tests.server.streams import Feed, frames_of, search

MAX_IMAGE_BYTES = 200_000
MAX_IMAGE_PIXELS = 1_000_000


@pytest.fixture(scope="module")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("frames")
    s = LiveServer(
        shapes_model_dir,
        f"embedded:{workdir / 'data'}",
        workdir,
        "--max-image-bytes",
        str(MAX_IMAGE_BYTES),
        "--max-image-pixels",
        str(MAX_IMAGE_PIXELS),
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def frames(stream_bytes: bytes) -> list[Frame]:
    """The first frame of each second of that video, as PNG (lossless) with its time: what an edge device
    sampling at 1 fps would send."""
    out: list[Frame] = []
    with av.open(io.BytesIO(stream_bytes)) as container:
        start = None
        for frame in container.decode(video=0):
            assert frame.time is not None
            start = frame.time if start is None else start
            t = frame.time - start
            if t >= len(out) - 1e-6:
                png = io.BytesIO()
                frame.to_image().save(png, format="PNG")
                out.append(Frame(png.getvalue(), round(t, 6)))
    assert len(out) == 16
    return out


def png(width: int, height: int, noise: bool = False) -> bytes:
    out = io.BytesIO()
    if noise:
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(out, format="PNG")
    else:
        Image.new("1", (width, height)).save(out, format="PNG")
    return out.getvalue()


class HeldFrames:
    """Frames that stop after `hold_at` until released (a device that keeps its connection open)."""

    def __init__(self, frames: list[Frame], hold_at: int) -> None:
        self.frames, self.hold_at = frames, hold_at
        self.release = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        for i, f in enumerate(self.frames):
            if i >= self.hold_at:
                self.release.wait(60)
            yield f


def test_frames_are_searchable_and_give_the_moments_of_the_same_video(
    server: LiveServer, stream_bytes: bytes, frames: list[Frame]
) -> None:
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        list(stub.Ingest(iter(Feed("ts-video", stream_bytes, hold_at=1 << 30, segment_s=1.0)), timeout=120))
        events = []
        done = client.ingest_frames(frames, "edge-frames", {"camera": "edge"}, segment_s=1.0, on_progress=events.append)
        committed = [e for e in events if isinstance(e, IngestCommitted)]
        assert [c.frames for c in committed] == list(range(1, 17))  # one commit per second, each frame once
        assert committed[-1].bytes == 0 and committed[-1].media_s == pytest.approx(16.0)
        v = done.video
        assert (v.state, done.frames, v.size_bytes, v.codec, (v.width, v.height)) == (
            "complete",
            16,
            0,
            "frames",
            (256, 256),
        )
        assert v.duration_s == pytest.approx(16.0) and v.metadata == {"camera": "edge"}
        for (color, shape), start in zip(SHAPES, (0, 4, 8, 12), strict=True):
            hits = search(stub, f"a {color} {shape}", "edge-frames", complete_only=True)
            assert hits and start <= hits[0].start_s < start + 4, (color, shape, hits[:1])
            # the same top hits: the shape's four seconds (their order among near-equal scores may differ)
            live_hits = search(stub, f"a {color} {shape}", "ts-video")
            assert (
                sorted(h.start_s for h in hits[:4])
                == sorted(h.start_s for h in live_hits[:4])
                == [start + i for i in range(4)]
            )
        # the same frames at the same times: the same moments. Scores differ a little: the video path scales
        # from YUV 4:2:0, the frames path from the RGB picture (measured: at most 0.076 of cosine similarity,
        # while a frame of another shape scores over 1 lower)
        ours, theirs = frames_of(stub, "edge-frames"), frames_of(stub, "ts-video")
        assert [t for t, _ in ours] == pytest.approx([t for t, _ in theirs], abs=1e-3)
        diff = np.abs(np.subtract([s for _, s in ours], [s for _, s in theirs]))
        assert diff.max() < 0.15, sorted(diff)[-5:]


@pytest.fixture(scope="module")
def frames_whole(server: LiveServer, frames: list[Frame]) -> str:
    """The id of a video of the frames sent in one unbroken stream (2 s segments): what a stream of them that
    broke and resumed must equal."""
    with Client(server.target) as client:
        done = client.ingest_frames(frames, "frames-whole", segment_s=2.0)
    assert (done.video.state, done.frames) == ("complete", 16)
    return "frames-whole"


def test_a_dropped_frames_stream_resumes_without_a_frame_missing_or_twice(
    server: LiveServer, frames: list[Frame], frames_whole: str
) -> None:
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        held = HeldFrames(frames, hold_at=5)  # frames 0-3 have their end: two segments of 2 s, no more
        upload_id, committed = "", 0
        for event in client.ingest_frames_events(held, "frames-resumed", segment_s=2.0):
            if isinstance(event, IngestAccepted):
                upload_id = event.upload_id
            if isinstance(event, IngestCommitted):
                committed = event.frames
                if committed >= 4:
                    break  # the link drops (the call is cancelled)
        held.release.set()
        assert upload_id and committed == 4
        video = None
        for _ in range(100):
            video = client.get_video("frames-resumed")
            if video.state == "interrupted":
                break
            time.sleep(0.1)
        assert video is not None and video.state == "interrupted" and video.frames == 4
        with pytest.raises(MomentsError) as e:
            client.ingest_frames(frames[5:], "frames-resumed", resume_upload_id=upload_id, resume_offset=5)
        assert e.value.code == grpc.StatusCode.FAILED_PRECONDITION and "resume from offset 4" in e.value.message
        with pytest.raises(MomentsError) as e:  # a resume must go on at the committed end (frame 4 at 4 s)
            client.ingest_frames(frames[5:], "frames-resumed", resume_upload_id=upload_id, resume_offset=4)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "frame 4" in e.value.message
        events: list[object] = []
        done = client.ingest_frames(
            frames[committed:],
            "frames-resumed",
            segment_s=2.0,
            resume_upload_id=upload_id,
            resume_offset=committed,
            on_progress=events.append,
        )
        accepted = events[0]
        assert isinstance(accepted, IngestAccepted) and (accepted.offset, accepted.media_s) == (4, pytest.approx(4.0))
        assert done.video.state == "complete" and done.frames == 16
        assert frames_of(stub, "frames-resumed") == frames_of(stub, frames_whole)


def test_bad_frames_get_precise_statuses_and_keep_what_was_committed(server: LiveServer, frames: list[Frame]) -> None:
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        # a time that goes back: the first segments stay, the video is interrupted
        back = [*frames[:3], Frame(frames[3].image, 1.5)]
        with pytest.raises(MomentsError) as e:
            client.ingest_frames(back, "frames-back", segment_s=1.0)
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT and "frame 3" in e.value.message, e.value.message
        assert "increase strictly" in e.value.message
        video = client.get_video("frames-back")
        assert video.state == "interrupted" and video.frames == 2  # frames 0-1; frame 2 had no end yet
        assert search(stub, "a red circle", "frames-back")
        for bad, code, words in (
            ([Frame(b"not a picture", 0.0)], grpc.StatusCode.INVALID_ARGUMENT, "frame 0: cannot decode"),
            ([frames[0], Frame(png(1200, 1000), 1.0)], grpc.StatusCode.RESOURCE_EXHAUSTED, "frame 1 is 1200x1000"),
            ([Frame(png(300, 300, noise=True), 0.0)], grpc.StatusCode.RESOURCE_EXHAUSTED, "bytes"),
            ([Frame(frames[0].image, -1.0)], grpc.StatusCode.INVALID_ARGUMENT, "frame 0: time_s must be"),
            ([Frame(frames[0].image, 0.0), Frame(frames[1].image, 0.0)], grpc.StatusCode.INVALID_ARGUMENT, "frame 1"),
        ):
            with pytest.raises(MomentsError) as e:
                client.ingest_frames(bad, "frames-bad", segment_s=1.0)
            assert e.value.code == code and words in e.value.message, (words, e.value.message)
        with pytest.raises(MomentsError) as e:
            client.get_video("frames-bad")
        assert e.value.code == grpc.StatusCode.NOT_FOUND  # nothing was committed by any of them
        # a chunk in a FRAMES stream, sampling options: refused
        header = pb.IngestHeader(video_id="frames-proto", mode=pb.INGEST_MODE_FRAMES)
        for requests, words in (
            (
                [pb.IngestRequest(header=header), pb.IngestRequest(chunk=b"1234")],
                "a chunk arrived in a stream of frames",
            ),
            (
                [pb.IngestRequest(header=pb.IngestHeader(video_id="f", mode=2, sampling=pb.SamplingOptions(fps=2)))],
                "leave sampling unset",
            ),
        ):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Ingest(iter(requests), timeout=30))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in (err.value.details() or "")


def test_an_idle_interrupted_stream_expires(shapes_model_dir: Path, frames: list[Frame], tmp_path: Path) -> None:
    server = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'data'}", tmp_path, "--upload-ttl-s", "1")
    try:
        with Client(server.target) as client:
            assert client.info().limits.upload_ttl_s == 1.0
            held = HeldFrames(frames, hold_at=4)
            upload_id = ""
            for event in client.ingest_frames_events(held, "frames-idle", segment_s=1.0):
                if isinstance(event, IngestAccepted):
                    upload_id = event.upload_id
                if isinstance(event, IngestCommitted) and event.frames >= 2:
                    break
            held.release.set()
            # interrupted at once (a wrong offset is FAILED_PRECONDITION); after a second without activity the
            # housekeeping drops its resume state (NOT_FOUND, saying why)
            deadline = time.monotonic() + 30
            while True:
                with pytest.raises(MomentsError) as e:
                    client.ingest_frames(frames[9:], "frames-idle", resume_upload_id=upload_id, resume_offset=9)
                if e.value.code != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert e.value.code == grpc.StatusCode.NOT_FOUND and "expired" in e.value.message, e.value.message
            committed = client.get_video("frames-idle").frames
            with pytest.raises(MomentsError) as e:  # the right offset too
                client.ingest_frames(
                    frames[committed:], "frames-idle", resume_upload_id=upload_id, resume_offset=committed
                )
            assert e.value.code == grpc.StatusCode.NOT_FOUND and "expired" in e.value.message
            video = client.get_video("frames-idle")
            assert video.state == "interrupted" and video.frames >= 2
            assert client.search("a red circle", video_ids="frames-idle").moments  # what was committed stays
            assert "expired" in server.output()
    finally:
        server.stop()


def test_a_frames_stream_resumes_itself_after_a_dropped_link(
    server: LiveServer, frames: list[Frame], frames_whole: str
) -> None:
    """The client keeps the frames sent since the last commit and resumes on its own when the link drops."""
    relay = Relay(server.target)
    committed = threading.Event()
    cut = threading.Event()

    def source() -> Iterator[Frame]:
        for i, frame in enumerate(frames):
            if i == 8 and not cut.is_set():
                assert committed.wait(60), "no commit before frame 8"
                relay.cut()
                cut.set()
            yield frame

    try:
        with Client(relay.target) as client:
            events = []
            for event in client.ingest_frames_events(source(), "frames-auto", segment_s=2.0):
                if isinstance(event, IngestCommitted):
                    committed.set()
                events.append(event)
    finally:
        relay.close()
    accepted = [e for e in events if isinstance(e, IngestAccepted)]
    assert cut.is_set() and len(accepted) >= 2 and {a.upload_id for a in accepted} == {accepted[0].upload_id}
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        video = client.get_video("frames-auto")
        assert (video.state, video.frames) == ("complete", 16)
        stub = pb_grpc.VideoSearchStub(ch)
        assert frames_of(stub, "frames-auto") == frames_of(stub, frames_whole)
