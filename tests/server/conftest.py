"""A live Moments server with a small library of generated videos, once on each store path:
the embedded store in-process, and ApertureDB's wire protocol through the real `aperturedb` SDK."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import Segment, write_shapes_video
from tests.live import LiveServer, StoreListener
from tests.server.streams import STREAM_SHAPES

MAX_UPLOAD = 3_000_000


@dataclass
class Library:
    server: LiveServer
    stub: pb_grpc.VideoSearchStub
    videos: dict[str, list[Segment]]  # video_id → what is on screen when
    workdir: Path


# video_id: (codec, suffix, size, shapes, metadata)
VIDEOS = {
    "cam-north": (
        "h264",
        "mp4",
        (256, 256),
        [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")],
        {"camera": "north", "floor": 1.0},
    ),
    "cam-south": (
        "vp9",
        "webm",
        (256, 256),
        [("blue", "square"), ("purple", "cross"), ("red", "circle")],
        {"camera": "south", "floor": 2.0},
    ),
    "cam-east": (
        "mpeg4",
        "avi",
        (320, 240),
        [("orange", "triangle"), ("green", "triangle"), ("red", "circle")],
        {"camera": "east", "floor": 3.0, "outdoor": True},
    ),
}


def value(v: object) -> pb.Value:
    if isinstance(v, bool):
        return pb.Value(bool_value=v)
    if isinstance(v, float | int):
        return pb.Value(number_value=float(v))
    return pb.Value(string_value=str(v))


def ingest_requests(
    path: Path, video_id: str, metadata: dict[str, object] | None = None, chunk: int = 64 * 1024, **header: object
) -> Iterator[pb.IngestRequest]:
    h = pb.IngestHeader(video_id=video_id, filename=path.name, **header)  # type: ignore[arg-type]
    for k, v in (metadata or {}).items():
        h.metadata[k].CopyFrom(value(v))
    yield pb.IngestRequest(header=h)
    data = path.read_bytes()
    for i in range(0, len(data), chunk):
        yield pb.IngestRequest(chunk=data[i : i + chunk])


def ingest(stub: pb_grpc.VideoSearchStub, path: Path, video_id: str, **kw: object) -> list[pb.IngestEvent]:
    return list(stub.Ingest(ingest_requests(path, video_id, **kw), timeout=120))  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def video_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[Segment]]]:
    folder = tmp_path_factory.mktemp("videos")
    out = {}
    for seed, (vid, (codec, suffix, size, shapes, _)) in enumerate(VIDEOS.items()):
        path = folder / f"{vid}.{suffix}"
        out[vid] = (path, write_shapes_video(path, shapes, seconds_each=2.0, fps=10, size=size, codec=codec, seed=seed))
    return out


@pytest.fixture(scope="module", params=["embedded", "aperturedb"])
def library(
    request: pytest.FixtureRequest, shapes_model_dir: Path, video_files: dict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Library]:
    workdir = tmp_path_factory.mktemp(f"server-{request.param}")
    store, listener = store_for(request.param, workdir)
    server = LiveServer(shapes_model_dir, store, workdir, "--max-upload-bytes", str(MAX_UPLOAD))
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.VideoSearchStub(channel)
    try:
        for vid, (path, _) in video_files.items():
            events = ingest(stub, path, vid, metadata=VIDEOS[vid][4], thumbnails=True)
            assert events[-1].WhichOneof("event") == "done", events
        yield Library(server, stub, {vid: seg for vid, (_, seg) in video_files.items()}, workdir)
    finally:
        channel.close()
        server.stop()
        if listener is not None:
            listener.stop()


def store_for(kind: str, workdir: Path) -> tuple[str, StoreListener | None]:
    """The store URL of a server under test: "embedded" in-process, or "aperturedb" through a wire listener
    (returned, to stop after the server) and the real SDK."""
    if kind == "embedded":
        return f"embedded:{workdir / 'data'}", None
    listener = StoreListener(workdir / "adb", workdir)
    return listener.url, listener


@pytest.fixture(scope="module")
def stream_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """16 s of MPEG-TS: red circle 0-4 s, blue square 4-8 s, green triangle 8-12 s, yellow cross 12-16 s."""
    path = tmp_path_factory.mktemp("ts") / "cam.ts"
    write_shapes_video(path, STREAM_SHAPES, seconds_each=4.0, fps=10, codec="h264")
    return path.read_bytes()
