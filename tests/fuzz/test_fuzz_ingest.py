"""Ingest through a live server: any header and metadata, and mutated real video files (truncated,
bit-flipped, overwritten, spliced across containers, empty, random, huge dimensions in the header), are
each answered with `done` or a precise status, and the server keeps serving."""

from __future__ import annotations

import math
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.fuzz.conftest import NOT_PRECISE, assert_serving, budget, record
from tests.fuzz.strategies import FLOATS, KEYS, VALUES, VIDEO_IDS, Corpus, mutated

SHAPES = [("red", "circle"), ("blue", "square")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Small real files of each codec/container the sample writer makes."""
    folder = tmp_path_factory.mktemp("fuzz-videos")
    out = Corpus()
    for codec, suffix in (("h264", "mp4"), ("vp9", "webm"), ("mpeg4", "avi"), ("mjpeg", "avi"), ("h264", "mkv")):
        p = folder / f"{codec}.{suffix}"
        write_shapes_video(p, SHAPES, seconds_each=0.5, fps=10, size=(64, 64), codec=codec)
        out[f"{codec}.{suffix}"] = p.read_bytes()
    return out


def _requests(header: pb.IngestHeader, data: bytes, chunk: int = 32 * 1024) -> Iterator[pb.IngestRequest]:
    yield pb.IngestRequest(header=header)
    for i in range(0, len(data), chunk):
        yield pb.IngestRequest(chunk=data[i : i + chunk])


def _ingest(stub: pb_grpc.VideoSearchStub, header: pb.IngestHeader, data: bytes) -> str:
    """'OK' (a done event), or the status code's name; fails on a stream that ends without either."""
    try:
        events = list(stub.Ingest(_requests(header, data), timeout=60))
    except grpc.RpcError as e:
        assert e.details(), f"{e.code().name} without a message"
        return str(e.code().name)
    assert events and events[-1].WhichOneof("event") == "done", events
    return "OK"


# -- header and metadata -------------------------------------------------------------------------------

_counter = iter(range(1 << 62))


@st.composite
def headers(draw: st.DrawFn) -> pb.IngestHeader:
    h = pb.IngestHeader(
        video_id=draw(st.one_of(VIDEO_IDS, st.just("seed"))),
        filename=draw(st.one_of(st.sampled_from(["a.mp4", "b.webm", "", ".", "x" * 300]), st.text(max_size=64))),
        replace=draw(st.booleans()),
        thumbnails=draw(st.booleans()),
        size_bytes=draw(st.one_of(st.just(0), st.integers(0, 2**64 - 1))),
        sha256=draw(st.one_of(st.just(""), st.text(max_size=70), st.from_regex(r"[0-9a-f]{64}", fullmatch=True))),
    )
    for k, v in draw(st.dictionaries(KEYS, VALUES, max_size=4)).items():
        h.metadata[k].CopyFrom(v)
    if draw(st.booleans()):
        h.sampling.fps = draw(st.one_of(FLOATS, st.floats(0.1, 30)))
        h.sampling.max_frames = draw(st.integers(0, 2**32 - 1))
    if h.video_id != "seed" and not h.replace and draw(st.booleans()):
        h.video_id = f"fz{next(_counter)}"[:128]  # a fresh id: more inputs get through to the decoder
    return h


@budget(quick=40, fuzz=1500)
@given(header=headers(), body=st.sampled_from(["h264.mp4", "mjpeg.avi", "empty"]))
def test_any_header_gets_a_precise_status(
    fuzz_stub: pb_grpc.VideoSearchStub, corpus: dict[str, bytes], header: pb.IngestHeader, body: str
) -> None:
    outcome = _ingest(fuzz_stub, header, b"" if body == "empty" else corpus[body])
    record("ingest header", outcome)
    assert grpc.StatusCode[outcome] not in NOT_PRECISE, f"{outcome} for {header}"


def test_nan_fps_is_invalid_argument(fuzz_stub: pb_grpc.VideoSearchStub, corpus: dict[str, bytes]) -> None:
    header = pb.IngestHeader(video_id="nan-fps", filename="a.mp4", sampling=pb.SamplingOptions(fps=math.nan))
    assert _ingest(fuzz_stub, header, corpus["h264.mp4"]) == "INVALID_ARGUMENT"


@pytest.mark.parametrize("number", [math.nan, math.inf])
def test_non_finite_metadata_is_invalid_argument(
    fuzz_stub: pb_grpc.VideoSearchStub, corpus: dict[str, bytes], number: float
) -> None:
    header = pb.IngestHeader(video_id=f"meta-{number}", filename="a.mp4")
    header.metadata["speed"].number_value = number
    assert _ingest(fuzz_stub, header, corpus["h264.mp4"]) == "INVALID_ARGUMENT"


# -- the video decoder -----------------------------------------------------------------------------------


def patch_dimensions(data: bytes, width: int, height: int) -> bytes:
    """Width/height fields in the container header replaced: mp4's tkhd and avc1/mp4v sample entries,
    AVI's BITMAPINFOHEADER, and every JPEG SOF (the frames of MJPEG)."""
    out = bytearray(data)
    for fourcc in (b"avc1", b"mp4v"):
        i = out.find(fourcc)
        if i != -1 and i + 32 <= len(out):
            out[i + 28 : i + 32] = struct.pack(">HH", width & 0xFFFF, height & 0xFFFF)
    i = out.find(b"tkhd")
    if i != -1:
        version = out[i + 4]
        at = i + 4 + (92 if version == 1 else 80)
        if at + 8 <= len(out):
            out[at : at + 8] = struct.pack(">II", (width & 0xFFFF) << 16, (height & 0xFFFF) << 16)
    i = out.find(b"strf")
    if i != -1 and i + 20 <= len(out):
        out[i + 12 : i + 20] = struct.pack("<ii", width, height)
    j = out.find(b"\xff\xc0")
    while j != -1 and j + 9 <= len(out):
        out[j + 5 : j + 9] = struct.pack(">HH", min(height, 0xFFFF), min(width, 0xFFFF))
        j = out.find(b"\xff\xc0", j + 2)
    return bytes(out)


@st.composite
def videos(draw: st.DrawFn, corpus: dict[str, bytes]) -> tuple[str, str, bytes]:
    name = draw(st.sampled_from(sorted(corpus)))
    if draw(st.integers(0, 5)) == 0:
        w, h = draw(st.sampled_from([(0, 0), (1, 1), (8192, 8192), (16384, 16384), (65535, 65535), (65535, 1)]))
        return name, f"huge {w}x{h}", patch_dimensions(corpus[name], w, h)
    kind, data = draw(mutated([corpus[name], *[v for k, v in corpus.items() if k != name][:1]]))
    return name, kind, data


@budget(quick=40, fuzz=1500)
@given(data=st.data())
def test_mutated_videos_get_a_precise_status(
    fuzz_stub: pb_grpc.VideoSearchStub, corpus: dict[str, bytes], data: st.DataObject
) -> None:
    name, kind, blob = data.draw(videos(corpus))
    suffix = data.draw(st.sampled_from([Path(name).suffix, ".mp4", ".webm", ".bin", ""]))
    header = pb.IngestHeader(video_id=f"mv{next(_counter)}", filename=f"v{suffix}", sampling=pb.SamplingOptions(fps=5))
    outcome = _ingest(fuzz_stub, header, blob)
    record("video decoder", outcome)
    assert grpc.StatusCode[outcome] not in NOT_PRECISE, f"{outcome} for {kind} {name} ({len(blob)} bytes)"


def test_server_still_serving_after_ingest_fuzz(fuzz_stub: pb_grpc.VideoSearchStub) -> None:
    assert_serving(fuzz_stub)


def _tagged_mkv(path: Path) -> bytes:
    """A small h264 Matroska file with the title tag TAGTAGTAG."""
    import av

    with av.open(str(path), mode="w") as c:
        c.metadata["title"] = "TAGTAGTAG"
        stream = c.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode():
            c.mux(packet)
    data = path.read_bytes()
    assert data.count(b"TAGTAGTAG") == 1 and data.count(b"V_MPEG4/ISO/AVC") == 1
    return data


def test_container_tags_that_are_not_utf8_are_read(fuzz_stub: pb_grpc.VideoSearchStub, tmp_path: Path) -> None:
    """Found by this fuzzer: a bit flip in a tag made PyAV's open raise UnicodeDecodeError (INTERNAL)."""
    data = _tagged_mkv(tmp_path / "tagged.mkv")
    header = pb.IngestHeader(video_id="not-utf8-tag", filename="tagged.mkv")
    assert _ingest(fuzz_stub, header, data.replace(b"TAGTAGTAG", b"\x93\x80\xff\xfe\x81TAG\x85")) == "OK"


def test_unknown_codec_is_invalid_argument(fuzz_stub: pb_grpc.VideoSearchStub, tmp_path: Path) -> None:
    """Found by this fuzzer: a stream whose codec id FFmpeg does not know has no codec context (INTERNAL)."""
    data = _tagged_mkv(tmp_path / "tagged.mkv").replace(b"V_MPEG4/ISO/AVC", b"V_QQQQQ/ISO/QQQ")
    header = pb.IngestHeader(video_id="unknown-codec", filename="x.mkv")
    assert _ingest(fuzz_stub, header, data) == "INVALID_ARGUMENT"
