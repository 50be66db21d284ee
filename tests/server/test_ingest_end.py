"""The end of an Ingest stream (IngestRequest.end): a stream that sends it is complete at once, a message after it
is refused, a stream that is cut without it is never taken for complete, and the typed clients send it.

The server here waits ten minutes (--ingest-end-settle-s 600) before it takes a stream that ends without the
marker for complete, so within these tests a stream completes only by the marker: a client that did not send it
would run into its call's deadline, and a half-closed stream without it is still open when the test cancels it."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import AsyncClient, Client, Frame, IngestCommitted, MomentsError, Video
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer

SETTLE_S = 600  # far longer than any call here: a stream without the marker never completes in these tests
CALL_S = 120  # each call's deadline
COLORS = ["red", "blue", "green", "yellow", "white", "black"]


@pytest.fixture(scope="module")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("ingest-end")
    s = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir, "--ingest-end-settle-s", str(SETTLE_S))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def frames() -> list[Frame]:
    """One plain PNG a second."""
    out = []
    for i, color in enumerate(COLORS):
        png = io.BytesIO()
        Image.new("RGB", (64, 64), color).save(png, format="PNG")
        out.append(Frame(png.getvalue(), float(i)))
    return out


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("end-video") / "clip.mp4"
    write_shapes_video(path, [("red", "circle"), ("blue", "square")], seconds_each=1.0, fps=10, size=(128, 128))
    return path.read_bytes()


@pytest.fixture(scope="module")
def ts_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("end-ts") / "cam.ts"
    write_shapes_video(path, [("red", "circle"), ("blue", "square")], seconds_each=2.0, fps=10, codec="h264")
    return path.read_bytes()


def frames_header(video_id: str, sends_end: bool = False, upload_id: str = "", offset: int = 0) -> pb.IngestRequest:
    header = pb.IngestHeader(
        video_id=video_id,
        mode=pb.INGEST_MODE_FRAMES,
        segment_s=1.0,
        sends_end=sends_end,
        resume_upload_id=upload_id,
        resume_offset=offset,
    )
    return pb.IngestRequest(header=header)


def frame(f: Frame) -> pb.IngestRequest:
    return pb.IngestRequest(frame=pb.IngestFrame(image=f.image, time_s=f.time_s))


END = pb.IngestRequest(end=pb.IngestEnd())


def after_the_stream(client: Client, video_id: str) -> Video:
    """The video once the server has ended its stream (its state no longer "live"; at most 10 s)."""
    video = client.get_video(video_id)
    for _ in range(100):
        if video.state != "live":
            break
        time.sleep(0.1)
        video = client.get_video(video_id)
    return video


def upload(video_id: str, data: bytes, sends_end: bool = False) -> list[pb.IngestRequest]:
    """An UPLOAD with neither size nor sha256: only the end of the stream says it is whole."""
    header = pb.IngestRequest(header=pb.IngestHeader(video_id=video_id, filename="clip.mp4", sends_end=sends_end))
    return [header, *(pb.IngestRequest(chunk=data[i : i + 16384]) for i in range(0, len(data), 16384))]


def test_a_stream_with_the_end_marker_is_complete_at_once(
    server: LiveServer, frames: list[Frame], video: bytes
) -> None:
    before = server.ingest_ends()
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        events = list(stub.Ingest(iter([frames_header("end-frames"), *map(frame, frames), END]), timeout=CALL_S))
        assert events[-1].WhichOneof("event") == "done"
        assert (events[-1].done.video.state, events[-1].done.frames) == ("complete", len(frames))  # the last too
        events = list(stub.Ingest(iter([*upload("end-upload", video), END]), timeout=CALL_S))
        assert events[-1].WhichOneof("event") == "done" and events[-1].done.video.state == "complete"
        assert client.get_video("end-upload").frames == 2
    assert server.ingest_ends() == {**before, "marker": before["marker"] + 2}


def test_a_message_after_the_end_marker_is_invalid_and_nothing_of_it_is_committed(
    server: LiveServer, frames: list[Frame], video: bytes
) -> None:
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(iter([*upload("after-end-upload", video), END, upload("x", video)[1]]), timeout=CALL_S))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a chunk arrived after IngestEnd" in (e.value.details() or ""), e.value.details()
        with pytest.raises(MomentsError) as missing:
            client.get_video("after-end-upload")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND  # an upload is all or nothing

        requests = [frames_header("after-end-frames"), *map(frame, frames[:4]), END, frame(frames[4])]
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(iter(requests), timeout=CALL_S))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "a frame arrived after IngestEnd" in (e.value.details() or ""), e.value.details()
        video_record = client.get_video("after-end-frames")
        # frames 0-2 have their end (committed, they stay); frame 3 was held and the stream broke: not placed
        assert (video_record.state, video_record.frames) == ("interrupted", 3)


def test_a_stream_cut_without_the_end_marker_is_not_complete(server: LiveServer, frames: list[Frame]) -> None:
    """The sender closes its side without the marker, then cancels: what grpc.aio shows the handler of a broken
    call. A server that took the end of the requests for the end of the stream would place the held last
    frame and finish ("complete", `done`) before the cancel; this one waits for the marker or the settle time."""
    closed = threading.Event()

    def requests() -> Iterator[pb.IngestRequest]:
        yield frames_header("cut-frames")
        yield from map(frame, frames[:4])
        closed.set()  # the generator ends next: the stream is half-closed

    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        call = pb_grpc.VideoSearchStub(ch).Ingest(requests(), timeout=CALL_S)
        events: list[pb.IngestEvent] = []
        done = threading.Event()

        def read() -> None:
            try:
                for event in call:
                    events.append(event)
                    if event.WhichOneof("event") == "done":
                        done.set()
            except grpc.RpcError:
                pass

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        deadline = time.monotonic() + 60
        while not any(e.WhichOneof("event") == "committed" and e.committed.frames == 3 for e in events):
            assert time.monotonic() < deadline, events  # frames 0-2 committed: frame 3 arrived, it is held
            time.sleep(0.05)
        assert closed.wait(60)
        assert not done.wait(3), "the half-closed stream was taken for complete"
        call.cancel()
        reader.join(60)
        video = after_the_stream(client, "cut-frames")
        assert (video.state, video.frames) == ("interrupted", 3)


def test_the_python_client_ends_its_streams_with_the_marker(
    server: LiveServer, frames: list[Frame], video: bytes, ts_bytes: bytes
) -> None:
    """UPLOAD, LIVE and FRAMES, resumable (through the pump) or not, sync and async: each completes only by the
    marker here (without it a call would run into its deadline), and the server counts each."""
    before = server.ingest_ends()
    with Client(server.target) as client:
        done = client.ingest(video, "py-upload", timeout=CALL_S)
        assert done.video.state == "complete"
        for retries in (0, 5):
            done = client.ingest(
                ts_bytes, f"py-live-{retries}", live=True, segment_s=1.0, timeout=CALL_S, resume_retries=retries
            )
            assert (done.video.state, done.frames) == ("complete", 4)
            done = client.ingest_frames(
                frames, f"py-frames-{retries}", segment_s=1.0, timeout=CALL_S, resume_retries=retries
            )
            assert (done.video.state, done.frames) == ("complete", len(frames))

    async def aio() -> None:
        async def aframes() -> AsyncIterator[Frame]:
            for f in frames:
                yield f

        async with AsyncClient(server.target) as client:
            done = await client.ingest(video, "py-aio-upload", timeout=CALL_S)
            assert done.video.state == "complete"
            for retries in (0, 5):
                done = await client.ingest_frames(
                    aframes(), f"py-aio-frames-{retries}", segment_s=1.0, timeout=CALL_S, resume_retries=retries
                )
                assert (done.video.state, done.frames) == ("complete", len(frames))
                done = await client.ingest(
                    ts_bytes, f"py-aio-live-{retries}", live=True, segment_s=1.0, timeout=CALL_S, resume_retries=retries
                )
                assert (done.video.state, done.frames) == ("complete", 4)

    asyncio.run(aio())
    assert server.ingest_ends() == {**before, "marker": before["marker"] + 10}


BROKEN_S = 30  # a call that the server must end at once (without the fix it would wait for the 600 s settle)


def run_to_end(
    stub: pb_grpc.VideoSearchStub, requests: list[pb.IngestRequest], committed_frames: int = 0
) -> tuple[list[pb.IngestEvent], grpc.RpcError]:
    """The call's events until it fails: the requests, then (once `committed_frames` are committed) a clean
    half-close (the generator ends), no cancel."""
    events: list[pb.IngestEvent] = []
    committed = threading.Event()

    def sent() -> Iterator[pb.IngestRequest]:
        yield from requests
        if committed_frames:
            assert committed.wait(60), "no commit"

    with pytest.raises(grpc.RpcError) as e:
        for event in stub.Ingest(sent(), timeout=BROKEN_S):
            events.append(event)
            if event.WhichOneof("event") == "committed" and event.committed.frames >= committed_frames:
                committed.set()
    return events, e.value


def test_a_stream_that_says_it_sends_the_marker_and_ends_without_it_is_broken(
    server: LiveServer, frames: list[Frame], video: bytes
) -> None:
    """IngestHeader.sends_end, then a clean half-close without IngestEnd: ABORTED at once (no settle), the FRAMES
    video interrupted without its held last frame and resumable, the upload not committed."""
    before = server.ingest_ends()
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        requests = [frames_header("flag-frames", sends_end=True), *map(frame, frames[:4])]
        events, error = run_to_end(stub, requests, committed_frames=3)
        assert error.code() == grpc.StatusCode.ABORTED, (error.code(), error.details())
        assert "ended without IngestEnd" in (error.details() or "") and "resume" in (error.details() or "")
        video_record = client.get_video("flag-frames")
        assert (video_record.state, video_record.frames) == ("interrupted", 3)  # frame 3 was held: not placed
        upload_id = events[0].accepted.upload_id
        assert upload_id
        # resumable where its commits stand: frames 3-5, then the marker, complete
        resumed = [frames_header("flag-frames", True, upload_id, 3), *map(frame, frames[3:]), END]
        done = list(stub.Ingest(iter(resumed), timeout=CALL_S))[-1]
        assert (done.done.video.state, done.done.frames) == ("complete", len(frames))

        _, error = run_to_end(stub, upload("flag-upload", video, sends_end=True))
        assert error.code() == grpc.StatusCode.ABORTED, (error.code(), error.details())
        assert "nothing of the upload was committed" in (error.details() or "")
        with pytest.raises(MomentsError) as missing:
            client.get_video("flag-upload")
        assert missing.value.code == grpc.StatusCode.NOT_FOUND
    assert server.ingest_ends() == {**before, "marker": before["marker"] + 1, "missing": before["missing"] + 2}


def test_a_live_stream_that_says_it_sends_the_marker_and_ends_without_it_is_broken(
    server: LiveServer, ts_bytes: bytes
) -> None:
    """The same for LIVE (the edge camera's mode): after a commit, a clean half-close without IngestEnd ends the
    call ABORTED at once and leaves the video interrupted with its committed segments, resumable to complete."""
    before = server.ingest_ends()
    header = pb.IngestHeader(video_id="flag-live", mode=pb.INGEST_MODE_LIVE, segment_s=1.0, sends_end=True)
    chunks = [pb.IngestRequest(chunk=ts_bytes[i : i + 8192]) for i in range(0, len(ts_bytes), 8192)]
    with grpc.insecure_channel(server.target) as ch, Client(server.target) as client:
        stub = pb_grpc.VideoSearchStub(ch)
        events, error = run_to_end(stub, [pb.IngestRequest(header=header), *chunks], committed_frames=1)
        assert error.code() == grpc.StatusCode.ABORTED, (error.code(), error.details())
        assert "ended without IngestEnd" in (error.details() or "") and "interrupted" in (error.details() or "")
        record = client.get_video("flag-live")
        assert record.state == "interrupted" and record.frames >= 1
        stored = [e.committed for e in events if e.WhichOneof("event") == "committed"][-1]
        resume = pb.IngestHeader(
            video_id="flag-live",
            mode=pb.INGEST_MODE_LIVE,
            segment_s=1.0,
            sends_end=True,
            resume_upload_id=events[0].accepted.upload_id,
            resume_offset=stored.bytes,
        )
        rest = [pb.IngestRequest(chunk=ts_bytes[i : i + 8192]) for i in range(stored.bytes, len(ts_bytes), 8192)]
        done = list(stub.Ingest(iter([pb.IngestRequest(header=resume), *rest, END]), timeout=CALL_S))[-1]
        assert (done.done.video.state, done.done.frames) == ("complete", 4)
    assert server.ingest_ends() == {**before, "marker": before["marker"] + 1, "missing": before["missing"] + 1}


def test_a_stream_without_the_flag_still_completes_after_the_settle(
    shapes_model_dir: Path, tmp_path: Path, frames: list[Frame], video: bytes
) -> None:
    """Senders that predate IngestEnd: the same half-closed streams without sends_end are complete after the
    server's (default) settle time, the held last frame placed, the upload committed."""
    s = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'data'}", tmp_path)
    try:
        with grpc.insecure_channel(s.target) as ch, Client(s.target) as client:
            stub = pb_grpc.VideoSearchStub(ch)
            done = list(stub.Ingest(iter([frames_header("old-frames"), *map(frame, frames[:4])]), timeout=CALL_S))
            assert (done[-1].done.video.state, done[-1].done.frames) == ("complete", 4)
            done = list(stub.Ingest(iter(upload("old-upload", video)), timeout=CALL_S))
            assert done[-1].done.video.state == "complete" and client.get_video("old-upload").frames == 2
        assert s.ingest_ends() == {"marker": 0, "settle": 2, "missing": 0}
    finally:
        s.stop()


def test_the_python_client_says_it_sends_the_marker(server: LiveServer, frames: list[Frame]) -> None:
    """A Python client's FRAMES stream broken mid-way (the caller leaves: the call is cancelled) is seen by the
    server as a stream that promised IngestEnd and ended without it ("missing"), not one that waits for the
    settle time; the video is interrupted with what was committed."""
    before = server.ingest_ends()
    release = threading.Event()

    def held() -> Iterator[Frame]:
        yield from frames[:4]
        release.wait(60)  # the source stalls: frames 0-2 have their end, frame 3 is held

    with Client(server.target) as client:
        try:
            for event in client.ingest_frames_events(held(), "py-flag", segment_s=1.0, timeout=CALL_S):
                if isinstance(event, IngestCommitted) and event.frames >= 3:
                    break  # the caller leaves: the call is cancelled
        finally:
            release.set()
        video_record = after_the_stream(client, "py-flag")
        assert (video_record.state, video_record.frames) == ("interrupted", 3)
    assert server.ingest_ends() == {**before, "missing": before["missing"] + 1}
