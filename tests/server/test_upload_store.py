"""UPLOAD's video blob comes from the spool: copied file to file by the in-process embedded store (byte-exact),
read into the one query message of a remote store, whose message bound Info reports and the upload meets as
a precise RESOURCE_EXHAUSTED while it arrives."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer, StoreListener
from tests.server.conftest import ingest

STORE_MESSAGE = 400_000  # the remote store's message bound: 300,000 bytes of video, a quarter for the frames


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("videos")
    small, big = folder / "small.mp4", folder / "big.avi"
    write_shapes_video(small, [("red", "circle"), ("blue", "square")], seconds_each=2.0)
    write_shapes_video(big, [("red", "circle"), ("blue", "square")], seconds_each=4.0, size=(640, 480), codec="mjpeg")
    assert small.stat().st_size < 300_000 < big.stat().st_size
    return small, big


def test_the_embedded_store_keeps_the_spooled_upload_byte_for_byte(
    shapes_model_dir: Path, videos: tuple[Path, Path], tmp_path: Path
) -> None:
    _, big = videos
    server = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'data'}", tmp_path, "--max-upload-bytes", "5000000")
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            assert stub.Info(pb.InfoRequest(), timeout=30).limits.max_stored_video_bytes == 5_000_000
            events = ingest(stub, big, "big")
            assert events[-1].done.video.size_bytes == big.stat().st_size
        stored = [p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()]
        assert [p.read_bytes() == big.read_bytes() for p in stored].count(True) == 1
    finally:
        server.stop()


def test_a_remote_store_bounds_uploads_by_its_message_size(
    shapes_model_dir: Path, videos: tuple[Path, Path], tmp_path: Path
) -> None:
    small, big = videos
    listener = StoreListener(tmp_path / "adb", tmp_path)
    server = LiveServer(
        shapes_model_dir,
        listener.url,
        tmp_path,
        "--store-message-bytes",
        str(STORE_MESSAGE),
        "--max-upload-bytes",
        "5000000",
    )
    try:
        with grpc.insecure_channel(server.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            limits = stub.Info(pb.InfoRequest(), timeout=30).limits
            assert (limits.max_stored_video_bytes, limits.max_upload_bytes) == (300_000, 5_000_000)
            events = ingest(stub, small, "small")  # read from the spool into the store's message
            assert events[-1].done.video.size_bytes == small.stat().st_size
            with pytest.raises(grpc.RpcError) as e:
                ingest(stub, big, "big")
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "300000" in (e.value.details() or "") and "max_stored_video_bytes" in (e.value.details() or "")
            with pytest.raises(grpc.RpcError) as e:  # a declared size is refused before any byte
                ingest(stub, big, "big", size_bytes=big.stat().st_size)
            assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "one query message" in (
                e.value.details() or ""
            )
    finally:
        server.stop()
        listener.stop()
