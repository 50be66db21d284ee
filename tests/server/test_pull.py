"""PULL ingest (IngestHeader.source_url): the server reads real network sources on loopback - an HLS playlist
over HTTP, an RTSP server (GStreamer's gst-rtsp-server) that goes away and comes back, MPEG-TS over UDP -
commits them as LIVE streams, and StopIngest ends them cleanly."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer, free_port
from tests.pull_sources import RtspServer, needs_rtsp, serve_hls

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]


@pytest.fixture(scope="module")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("pull")
    fast_retries = ("--pull-retries", "4", "--pull-backoff-s", "0.5", "--pull-timeout-s", "3")
    s = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir, *fast_retries)
    yield s
    s.stop()


@pytest.fixture
def stub(server: LiveServer) -> Iterator[pb_grpc.VideoSearchStub]:
    with grpc.insecure_channel(server.target) as ch:
        yield pb_grpc.VideoSearchStub(ch)


def pull_request(video_id: str, url: str, **header: object) -> Iterator[pb.IngestRequest]:
    yield pb.IngestRequest(header=pb.IngestHeader(video_id=video_id, source_url=url, **header))  # type: ignore[arg-type]


def search(stub: pb_grpc.VideoSearchStub, text: str, video_id: str, top_k: int = 5) -> list[pb.Moment]:
    request = pb.SearchRequest(text=text, top_k=top_k, filters=pb.SearchFilters(video_ids=[video_id]))
    return list(stub.Search(request, timeout=30).moments)


def frame_windows(stub: pb_grpc.VideoSearchStub, video_id: str) -> list[float]:
    """The sampling window (its start second) of every stored frame of the video: one query's hits, a frame
    each."""
    return sorted(m.start_s for m in search(stub, "a red circle", video_id, top_k=100))


# ------------------------------------------------------------------------------------------------ HLS


@pytest.fixture(scope="module")
def hls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A VOD playlist of 2 s segments, served by a real HTTP server on loopback: 16 s of the 4 shapes."""
    with serve_hls(tmp_path_factory.mktemp("hls"), SHAPES) as url:
        yield url


def test_an_hls_playlist_is_pulled_committed_and_searchable(stub: pb_grpc.VideoSearchStub, hls_url: str) -> None:
    events = list(stub.Ingest(pull_request("hls-1", hls_url, segment_s=2.0), timeout=120))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "done", kinds
    committed = [e.committed for e in events if e.WhichOneof("event") == "committed"]
    assert len(committed) >= 6 and committed[-1].media_s >= 15.0  # about a commit per 2 s of video
    pulls = [e.pull for e in events if e.WhichOneof("event") == "pull"]
    assert pulls and pulls[-1].media_s >= 15.0 and pulls[-1].reconnects == 0
    done = events[-1].done
    assert done.video.state == "complete" and done.frames == 16
    assert done.video.filename == hls_url and done.video.codec == "h264"
    assert frame_windows(stub, "hls-1") == [float(s) for s in range(16)]  # every second once
    for (color, shape), start in zip(SHAPES, (0, 4, 8, 12), strict=True):
        hits = search(stub, f"a {color} {shape}", "hls-1")
        assert hits and start <= hits[0].start_s < start + 4, (color, shape, hits[:1])


# ------------------------------------------------------------------------------------------------ RTSP


@pytest.fixture(scope="module")
def camera_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """20 s of H.264 in Matroska, a shape every 5 s, a keyframe every second (what a camera sends)."""
    path = tmp_path_factory.mktemp("rtsp") / "cam.mkv"
    write_shapes_video(path, SHAPES, seconds_each=5.0, fps=10, codec_options={"g": "10", "bf": "0"})
    return path


@pytest.fixture
def camera(camera_file: Path, tmp_path: Path) -> Iterator[RtspServer]:
    cam = RtspServer(camera_file, tmp_path / "rtsp.log")
    yield cam
    cam.stop()


def events_until(events: Iterator[pb.IngestEvent], predicate: object) -> list[pb.IngestEvent]:
    seen = []
    for ev in events:
        seen.append(ev)
        if predicate(ev):  # type: ignore[operator]
            return seen
    raise AssertionError(f"the stream ended first: {seen[-3:]}")


@needs_rtsp
def test_an_rtsp_pull_reconnects_after_the_source_restarts_and_stops_complete(
    stub: pb_grpc.VideoSearchStub, camera: RtspServer
) -> None:
    call = stub.Ingest(pull_request("rtsp-1", camera.url, segment_s=1.0), timeout=120)
    events = iter(call)
    events_until(events, lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= 2.0)
    camera.stop()  # the camera goes away mid-stream...
    broke = events_until(events, lambda e: e.WhichOneof("event") == "pull" and e.pull.error != "")[-1].pull
    assert broke.reconnects == 1 and 2.0 <= broke.media_s < 6.0, broke
    camera.start()  # ...and comes back at the same address, its stream starting over (its clock too)
    events_until(events, lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= broke.media_s + 7.0)
    stopped = stub.StopIngest(pb.StopIngestRequest(video_id="rtsp-1"), timeout=60)
    assert stopped.video.state == "complete"
    rest = list(events)
    assert rest[-1].WhichOneof("event") == "done" and rest[-1].done.video.state == "complete"
    video = stub.GetVideo(pb.GetVideoRequest(video_id="rtsp-1"), timeout=30)
    assert video.state == "complete" and video.duration_s >= broke.media_s + 7.0
    # one frame per second of the pulled media time, none twice: the second session follows the first
    times = frame_windows(stub, "rtsp-1")
    assert len(times) == video.frames and times == [float(s) for s in range(len(times))], times
    # the restarted camera started its file over: its second shape came 5 s after the break, not at 5 s
    blue = search(stub, "a blue square", "rtsp-1")
    assert blue and broke.media_s + 4.0 <= blue[0].start_s < broke.media_s + 7.0, (blue[:1], broke)
    with pytest.raises(grpc.RpcError) as e:
        stub.StopIngest(pb.StopIngestRequest(video_id="rtsp-1"), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND


@needs_rtsp
def test_a_caller_that_cancels_its_pull_ends_it_complete(stub: pb_grpc.VideoSearchStub, camera: RtspServer) -> None:
    call = stub.Ingest(pull_request("rtsp-2", camera.url, segment_s=1.0), timeout=120)
    events_until(iter(call), lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= 2.0)
    call.cancel()
    video = None
    for _ in range(200):
        video = stub.GetVideo(pb.GetVideoRequest(video_id="rtsp-2"), timeout=30)
        if video.state != "live":
            break
        time.sleep(0.05)
    assert video is not None and video.state == "complete" and video.frames >= 2, video


# ------------------------------------------------------------------------------------------------ UDP


def test_mpegts_over_udp_is_pulled_until_stopped(stub: pb_grpc.VideoSearchStub, tmp_path: Path) -> None:
    ts = tmp_path / "cam.ts"
    write_shapes_video(ts, SHAPES[:2], seconds_each=3.0, fps=10, codec_options={"g": "10"})
    data = ts.read_bytes()
    port = free_port()
    call = stub.Ingest(pull_request("udp-1", f"udp://127.0.0.1:{port}", segment_s=1.0), timeout=120)
    events = iter(call)
    events_until(events, lambda e: e.WhichOneof("event") == "accepted")
    time.sleep(1.0)  # the server binds the port as it starts pulling; UDP has no connection to wait for
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for i in range(0, len(data), 1316):  # 7 TS packets a datagram, as cameras send them
            sock.sendto(data[i : i + 1316], ("127.0.0.1", port))
            time.sleep(0.002)
    events_until(events, lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= 4.0)
    stub.StopIngest(pb.StopIngestRequest(video_id="udp-1"), timeout=60)
    done = list(events)[-1].done
    assert done.video.state == "complete" and 5 <= done.frames <= 6
    hits = search(stub, "a blue square", "udp-1")
    assert hits and 3 <= hits[0].start_s < 6, hits[:1]


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_sources_get_precise_statuses(stub: pb_grpc.VideoSearchStub, tmp_path: Path) -> None:
    for url in ("file:///etc/passwd", "/etc/passwd", "gopher://127.0.0.1/x", "concat:a.ts|b.ts", "rtsp:///cam"):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(pull_request("bad", url), timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "source_url" in (e.value.details() or ""), url
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Ingest(pull_request("bad", "http://127.0.0.1:1/x.m3u8", resume_upload_id="u"), timeout=30))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "resume" in (e.value.details() or "")
    # nothing listens there: bounded tries (the server's --pull-retries 4), then UNAVAILABLE naming the URL
    url = f"rtsp://user:secret@127.0.0.1:{free_port()}/cam"
    with pytest.raises(grpc.RpcError) as e:
        list(stub.Ingest(pull_request("gone", url), timeout=60))
    details = e.value.details() or ""
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE and f"{url.split('@')[1]}" in details, details
    assert "secret" not in details and "5 tries" in details
    with pytest.raises(grpc.RpcError) as e:
        stub.GetVideo(pb.GetVideoRequest(video_id="gone"), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND  # nothing was committed
    with pytest.raises(grpc.RpcError) as e:
        stub.StopIngest(pb.StopIngestRequest(video_id="nothing-runs"), timeout=30)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "nothing-runs" in (e.value.details() or "")


def test_stop_ingest_ends_a_callers_live_stream_complete(stub: pb_grpc.VideoSearchStub, tmp_path: Path) -> None:
    ts = tmp_path / "cam.ts"
    write_shapes_video(ts, SHAPES, seconds_each=2.0, fps=10)
    data = ts.read_bytes()
    release = threading.Event()

    def requests() -> Iterator[pb.IngestRequest]:  # half the stream, then a camera that keeps its link open
        yield pb.IngestRequest(header=pb.IngestHeader(video_id="cam-stop", mode=pb.INGEST_MODE_LIVE, segment_s=1.0))
        for i in range(0, len(data), 4096):
            if i >= len(data) // 2:
                release.wait(60)
                return
            yield pb.IngestRequest(chunk=data[i : i + 4096])

    try:
        events = iter(stub.Ingest(requests(), timeout=120))
        events_until(events, lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= 2.0)
        stopped = stub.StopIngest(pb.StopIngestRequest(video_id="cam-stop"), timeout=60)
        rest = list(events)
    finally:
        release.set()
    assert stopped.video.state == "complete" and 2 <= stopped.video.frames < 8, stopped.video
    assert rest[-1].WhichOneof("event") == "done" and rest[-1].done.frames == stopped.video.frames


@needs_rtsp
def test_a_server_shutdown_leaves_a_pull_interrupted(
    shapes_model_dir: Path, camera: RtspServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    first = LiveServer(shapes_model_dir, f"embedded:{data}", tmp_path)
    try:
        with grpc.insecure_channel(first.target) as ch:
            call = pb_grpc.VideoSearchStub(ch).Ingest(pull_request("rtsp-down", camera.url, segment_s=1.0), timeout=60)
            events = iter(call)
            events_until(events, lambda e: e.WhichOneof("event") == "committed" and e.committed.media_s >= 2.0)
            first.proc.terminate()  # SIGTERM: the server shuts down gracefully
            with pytest.raises(grpc.RpcError) as e:
                list(events)
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "shutting down" in (e.value.details() or "")
    finally:
        first.stop()
    second = LiveServer(shapes_model_dir, f"embedded:{data}", tmp_path)
    try:
        with grpc.insecure_channel(second.target) as ch:
            video = pb_grpc.VideoSearchStub(ch).GetVideo(pb.GetVideoRequest(video_id="rtsp-down"), timeout=30)
            assert video.state == "interrupted" and video.frames >= 2, video
    finally:
        second.stop()
