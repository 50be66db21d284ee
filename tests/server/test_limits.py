"""The server's limits, on a real server with small limits: bad or oversized input is refused at the edge
with a precise status, responses never pass the response limit, stale spool files are swept at start, and
reflection answers under grpc.reflection.v1 too."""

from __future__ import annotations

import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer
from tests.server.conftest import ingest, ingest_requests

RESPONSE_LIMIT = 20_000
LIMITS = {
    "--max-response-bytes": RESPONSE_LIMIT,
    "--max-metadata-keys": 8,
    "--max-metadata-value-bytes": 2000,
    "--max-metadata-bytes": 8000,
    "--max-image-pixels": 1_000_000,
    "--max-video-pixels": 256 * 256,
    "--max-video-duration-s": 5,
    "--max-query-chars": 200,
    "--max-video-aspect": 3,
    "--max-filter-conditions": 2,
}
# Each video carries ~7.9 KB of metadata, copied onto each of its frames.
BIG_METADATA = {k: k * 1990 for k in "abcd"}
STALE = "moments-upload-999999999-stale.mp4"  # no process has this pid (above any pid_max)
LEGACY_OLD, LEGACY_NEW = "moments-upload-oldfile1.mp4", "moments-upload-newfile1.mp4"


@dataclass
class Limited:
    server: LiveServer
    stub: pb_grpc.VideoSearchStub
    workdir: Path
    video: Path


@pytest.fixture(scope="module")
def limited(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Limited]:
    workdir = tmp_path_factory.mktemp("limited")
    # Spool files as a killed server leaves them, one of a live process, legacy names old and new.
    for name in (STALE, f"moments-upload-{os.getpid()}-live.mp4", LEGACY_OLD, LEGACY_NEW):
        (workdir / name).write_bytes(b"\0" * 1000)
    old = time.time() - 3 * 24 * 3600
    os.utime(workdir / LEGACY_OLD, (old, old))
    args = [str(a) for kv in LIMITS.items() for a in kv]
    server = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir, *args)
    channel = grpc.insecure_channel(server.target)
    video = workdir / "small.mp4"
    write_shapes_video(video, [("red", "circle"), ("blue", "square")], seconds_each=1.0, fps=10, seed=3)
    try:
        stub = pb_grpc.VideoSearchStub(channel)
        for i in range(3):
            assert ingest(stub, video, f"big-{i}", metadata=BIG_METADATA)[-1].WhichOneof("event") == "done"
        yield Limited(server, stub, workdir, video)
    finally:
        channel.close()
        server.stop()


def refused(call, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return str(err.value.details())


def header_only(header: pb.IngestHeader, gate: threading.Event) -> Iterator[pb.IngestRequest]:
    """The header, then chunks only after `gate`: a refusal that comes first was made at the header."""
    yield pb.IngestRequest(header=header)
    gate.wait(30)
    yield pb.IngestRequest(chunk=b"\0" * 1000)


def refused_at_header(stub: pb_grpc.VideoSearchStub, header: pb.IngestHeader) -> str:
    gate = threading.Event()
    started = time.monotonic()
    try:
        details = refused(lambda: list(stub.Ingest(header_only(header, gate), timeout=60)))
    finally:
        gate.set()
    assert time.monotonic() - started < 10, "refused only after the upload"
    return details


def test_info_reports_the_limits(limited: Limited) -> None:
    limits = limited.stub.Info(pb.InfoRequest()).limits
    assert limits.max_response_bytes == RESPONSE_LIMIT and limits.max_metadata_keys == 8
    assert (limits.max_metadata_value_bytes, limits.max_metadata_bytes, limits.max_metadata_key_chars) == (
        2000,
        8000,
        64,
    )
    assert limits.max_image_pixels == 1_000_000 and limits.max_video_pixels == 256 * 256
    assert limits.max_video_duration_s == 5 and limits.max_query_chars == 200
    assert limits.max_message_bytes == 8 * 1024**2 and limits.max_concurrent_ingests == 8
    assert limits.max_video_aspect == 3


def test_metadata_is_bounded_at_the_header(limited: Limited) -> None:
    stub = limited.stub
    huge = pb.IngestHeader(video_id="huge", metadata={"note": pb.Value(string_value="x" * 5_000_000)})
    assert "2000 bytes" in refused_at_header(stub, huge)
    many = pb.IngestHeader(video_id="many", metadata={f"k{i}": pb.Value(string_value="v" * 1000) for i in range(2000)})
    assert "2000 keys" in refused_at_header(stub, many)
    total = pb.IngestHeader(video_id="total", metadata={f"k{i}": pb.Value(string_value="v" * 1500) for i in range(6)})
    assert "8000" in refused_at_header(stub, total)
    for bad in (float("nan"), float("inf"), float("-inf")):
        header = pb.IngestHeader(video_id="nan", metadata={"level": pb.Value(number_value=bad)})
        assert "finite" in refused_at_header(stub, header)
    long_key = pb.IngestHeader(video_id="key", metadata={"k" * 5000: pb.Value(bool_value=True)})
    details = refused_at_header(stub, long_key)
    assert "64 characters" in details and len(details) < 300
    bad_date = pb.IngestHeader(video_id="date", metadata={"when": pb.Value(date_value="9" * 100_000)})
    assert len(refused_at_header(stub, bad_date)) < 300
    nan_fps = pb.IngestHeader(video_id="fps", sampling=pb.SamplingOptions(fps=float("nan")))
    assert "sampling.fps" in refused_at_header(stub, nan_fps)


def test_size_bytes_must_match_what_arrives(limited: Limited) -> None:
    size = limited.video.stat().st_size
    for declared in (size - 10, size + 10):
        requests = ingest_requests(limited.video, "sized", size_bytes=declared)
        details = refused(lambda r=requests: list(limited.stub.Ingest(r, timeout=60)), grpc.StatusCode.DATA_LOSS)
        assert f"size_bytes={declared}" in details
    assert ingest(limited.stub, limited.video, "sized", size_bytes=size)[-1].done.video.size_bytes == size
    limited.stub.DeleteVideo(pb.DeleteVideoRequest(video_id="sized"))


def test_video_pixels_and_duration_are_bounded(limited: Limited, tmp_path: Path) -> None:
    wide = tmp_path / "wide.mp4"
    write_shapes_video(wide, [("red", "circle")], seconds_each=1.0, size=(320, 240))
    assert "76800 pixels" in refused(lambda: ingest(limited.stub, wide, "wide"))
    long = tmp_path / "long.mp4"
    write_shapes_video(long, [("red", "circle")] * 3, seconds_each=2.0, fps=5)
    assert "at most 5 s" in refused(lambda: ingest(limited.stub, long, "long"))
    strip = tmp_path / "strip.mp4"  # within the pixels, over --max-video-aspect 3
    write_shapes_video(strip, [("red", "circle")], seconds_each=1.0, size=(256, 64))
    assert "256x64; the server takes frames up to 3:1" in refused(lambda: ingest(limited.stub, strip, "strip"))
    assert refused(lambda: limited.stub.GetVideo(pb.GetVideoRequest(video_id="long")), grpc.StatusCode.NOT_FOUND)


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb needs no more to be refused)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_query_images_and_texts_are_bounded(limited: Limited) -> None:
    stub = limited.stub
    for side in (20_000, 12_000, 1001):
        started = time.monotonic()
        details = refused(lambda s=side: stub.Search(pb.SearchRequest(image=_png_header(s, s))))
        assert (f"{side}x{side}" in details or f"{side * side} pixels" in details) and "1000000 pixels" in details
        assert time.monotonic() - started < 2
    assert "images[0]" in refused(lambda: stub.Embed(pb.EmbedRequest(images=[_png_header(20_000, 20_000)])))
    small = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(small, format="PNG")
    assert stub.Search(pb.SearchRequest(image=small.getvalue(), top_k=1)).moments
    assert "200" in refused(lambda: stub.Search(pb.SearchRequest(text="a" * 201)))
    assert "200" in refused(lambda: stub.Embed(pb.EmbedRequest(texts=["ok", "b" * 500])))


def test_time_range_and_filters_are_checked(limited: Limited) -> None:
    stub = limited.stub
    nan = float("nan")
    for filters in (pb.SearchFilters(start_s=nan), pb.SearchFilters(end_s=nan), pb.SearchFilters(end_s=float("inf"))):
        assert "finite" in refused(lambda f=filters: stub.Search(pb.SearchRequest(text="x", filters=f)))
    c = pb.Condition
    by_id = pb.SearchFilters(conditions=[c(key="video_id", op=c.EQ, values=[pb.Value(string_value="big-0")])])
    assert "--video" in refused(lambda: stub.Search(pb.SearchRequest(text="x", filters=by_id)))
    nan_value = pb.SearchFilters(conditions=[c(key="a", op=c.EQ, values=[pb.Value(number_value=nan)])])
    assert "finite" in refused(lambda: stub.Search(pb.SearchRequest(text="x", filters=nan_value)))
    three = pb.SearchFilters(conditions=[c(key="a", op=c.EQ, values=[pb.Value(string_value="x")])] * 3)
    assert "at most 2 conditions" in refused(lambda: stub.Search(pb.SearchRequest(text="x", filters=three)))


def test_search_pages_are_trimmed_to_the_response_limit(limited: Limited) -> None:
    request = pb.SearchRequest(text="a red circle", top_k=20)
    seen: list[tuple[str, float]] = []
    trimmed = 0
    while True:
        response = limited.stub.Search(request)
        assert response.ByteSize() <= RESPONSE_LIMIT and response.moments
        trimmed += response.trimmed
        seen += [(m.video_id, m.best_frame_s) for m in response.moments]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert trimmed and len(seen) == len(set(seen)) == 3 * 2  # every frame of the three videos, once
    assert all(m.metadata["a"].string_value == "a" * 1990 for m in limited.stub.Search(request).moments)


def test_video_pages_are_trimmed_to_the_response_limit(limited: Limited) -> None:
    page = limited.stub.ListVideos(pb.ListVideosRequest(page_size=10))
    assert page.trimmed and page.next_page_token and 0 < len(page.videos) < 3
    assert page.ByteSize() <= RESPONSE_LIMIT
    rest = limited.stub.ListVideos(pb.ListVideosRequest(page_size=10, page_token=page.next_page_token))
    ids = [v.video_id for v in page.videos] + [v.video_id for v in rest.videos]
    assert sorted(ids)[:3] == ["big-0", "big-1", "big-2"] and len(ids) == len(set(ids))


def test_stale_spool_files_are_swept_at_start(limited: Limited) -> None:
    left = {p.name for p in limited.workdir.glob("moments-upload-*")}
    assert left == {f"moments-upload-{os.getpid()}-live.mp4", LEGACY_NEW}, left


def test_reflection_v1_is_served(limited: Limited) -> None:
    with grpc.insecure_channel(limited.server.target) as channel:
        for version in ("v1", "v1alpha"):
            call = channel.stream_stream(
                f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
                request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
                response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
            )
            requests = [
                reflection_pb2.ServerReflectionRequest(list_services=""),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.reflection.v1.ServerReflection"),
                reflection_pb2.ServerReflectionRequest(file_containing_symbol="moments.v1.VideoSearch"),
            ]
            listed, v1_file, moments_file = list(call(iter(requests), timeout=10))
            names = {s.name for s in listed.list_services_response.service}
            assert {"moments.v1.VideoSearch", "grpc.reflection.v1.ServerReflection"} <= names, version
            assert v1_file.file_descriptor_response.file_descriptor_proto, v1_file
            assert moments_file.file_descriptor_response.file_descriptor_proto


def test_the_python_client_reports_trimmed_pages(limited: Limited) -> None:
    from moments_client import Client

    with Client(limited.server.target) as client:
        result = client.search("a red circle", top_k=20)
        assert result.trimmed and result.next_page_token and 0 < len(result) < 6
        assert result.to_json()["trimmed"] is True
        page = client.list_videos_page(page_size=10)
        assert page.trimmed and page.next_page_token
        assert sorted(v.video_id for v in client.list_videos(page_size=10))[:3] == ["big-0", "big-1", "big-2"]
