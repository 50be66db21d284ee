"""LIVE ingest under faults and concurrency, against real server processes: kill -9 at random points of live
streams (what was reported committed survives whole, nothing else is visible or left over in the store, the
stream resumes without a frame missing or twice), a video left "live" by a crash is "interrupted" at start,
concurrent streams with searches running, replace and delete of a live video, undecodable bytes mid-stream.

The store is inspected through its ApertureDB wire listener (--store-listen) with the real `aperturedb` SDK:
counts of a video's clips, descriptors and segment blobs through the graph, and store-wide orphans.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from moments_server.inference.manifest import load_manifest
from tests.live import LiveServer, free_port

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
SECONDS_EACH = 3.0
SAMPLE_FPS = 2.0  # one frame per 0.5 s window
SEGMENT_S = 1.0  # two frames a segment
FRAMES = round(len(SHAPES) * SECONDS_EACH * SAMPLE_FPS)  # 24
PASSWORD = "live-faults"
FRAME, SEGMENT = "has_frame", "has_segment"  # the graph's edges: Clip → Descriptor, Video → segment Blob
ROUNDS = int(os.environ.get("MOMENTS_LIVE_KILL_ROUNDS", "10"))
SEED = int(os.environ.get("MOMENTS_LIVE_KILL_SEED", "7"))


def start_server(model_dir: Path, workdir: Path, *extra: str) -> tuple[LiveServer, int]:
    """A server on `workdir/data` with its store's wire listener (user admin, PASSWORD) on a free port."""
    port = free_port()
    server = LiveServer(
        model_dir,
        f"embedded:{workdir / 'data'}",
        workdir,
        *extra,
        "--no-autotune-batches",
        "--log-level",
        "WARNING",
        "--store-listen",
        f"127.0.0.1:{port}",
        "--store-listen-user",
        "admin",
        "--store-listen-password",
        PASSWORD,
    )
    return server, port


class Store:
    """The server's store seen through the ApertureDB SDK."""

    def __init__(self, port: int, descriptor_set: str) -> None:
        from aperturedb.Connector import Connector

        self.db = Connector(
            host="127.0.0.1",
            port=port,
            user="admin",
            password=PASSWORD,
            use_ssl=True,
            verify_hostname=False,
            retry_interval_seconds=0,
        )
        self.set = descriptor_set

    def query(self, commands: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
        response, blobs = self.db.query(commands)
        assert isinstance(response, list), response
        for r in response:
            ((_, body),) = r.items()
            assert body.get("status", 0) >= 0, response
        return response, blobs

    def close(self) -> None:
        self.db.close()

    def of_video(self, video_id: str) -> dict[str, Any]:
        """A video's stored parts: clips (through the graph and by property), descriptors of those clips,
        their states, its blob's length and its segment blobs' byte ranges."""
        by_id = {"video_id": ["==", video_id]}
        r, blobs = self.query(
            [
                {"FindVideo": {"_ref": 1, "constraints": by_id, "blobs": True, "results": {"list": ["state"]}}},
                {"FindClip": {"_ref": 2, "video_ref": 1, "results": {"count": True}}},
                {
                    "FindDescriptor": {
                        "set": self.set,
                        "is_connected_to": {"ref": 2, "connection_class": FRAME},
                        "results": {"list": ["state", "start_s"]},
                    }
                },
                {
                    "FindBlob": {
                        "is_connected_to": {"ref": 1, "connection_class": SEGMENT},
                        "results": {"list": ["byte_start", "byte_end"]},
                    }
                },
                {"FindClip": {"constraints": by_id, "results": {"count": True}}},
                {"FindDescriptor": {"set": self.set, "constraints": by_id, "results": {"count": True}}},
                {"FindBlob": {"constraints": by_id, "results": {"count": True}}},
            ]
        )
        videos = r[0]["FindVideo"].get("entities") or []
        descriptors = r[2]["FindDescriptor"].get("entities") or []
        segments = r[3]["FindBlob"].get("entities") or []
        return {
            "videos": len(videos),
            "blob": len(blobs[videos[0]["_blob_index"]]) if videos and "_blob_index" in videos[0] else 0,
            "clips": r[1]["FindClip"].get("count", 0),
            "descriptors": len(descriptors),
            "states": sorted({d["state"] for d in descriptors}),
            "segments": sorted((int(s["byte_start"]), int(s["byte_end"])) for s in segments),
            "clips_by_id": r[4]["FindClip"].get("count", 0),
            "descriptors_by_id": r[5]["FindDescriptor"].get("count", 0),
            "blobs_by_id": r[6]["FindBlob"].get("count", 0),
        }

    def orphans(self) -> dict[str, int]:
        """Clips on no video, descriptors on no clip, blobs on no video, and anything "live"."""
        count = {"results": {"count": True}}
        on_clips = {"ref": 2, "connection_class": FRAME}
        r, _ = self.query(
            [
                {"FindVideo": {"_ref": 1, "results": {"count": True}}},
                {"FindClip": {"_ref": 2, "video_ref": 1, **count}},
                {"FindClip": count},
                {"FindDescriptor": {"set": self.set, "is_connected_to": on_clips, **count}},
                {"FindDescriptor": {"set": self.set, **count}},
                {"FindBlob": {"is_connected_to": {"ref": 1, "connection_class": SEGMENT}, **count}},
                {"FindBlob": count},
                {"FindVideo": {"constraints": {"state": ["==", "live"]}, **count}},
                {"FindDescriptor": {"set": self.set, "constraints": {"state": ["==", "live"]}, **count}},
            ]
        )
        n = [next(iter(x.values())).get("count", 0) for x in r]
        return {
            "clips": n[2] - n[1],
            "descriptors": n[4] - n[3],
            "blobs": n[6] - n[5],
            "live videos": n[7],
            "live frames": n[8],
        }


def blob_files_unreferenced(data_dir: Path) -> list[str]:
    """Blob files on disk that no store row references (the store's recovery removes them at start)."""
    db = sqlite3.connect(f"file:{data_dir / 'store.sqlite3'}?mode=ro", uri=True)
    try:
        referenced = {r[0] for r in db.execute("SELECT file FROM blobdata WHERE file IS NOT NULL")}
    finally:
        db.close()
    return sorted(p.name for p in (data_dir / "blobs").glob("*/*") if p.is_file() and p.name not in referenced)


@pytest.fixture(scope="module")
def stream_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """12 s of small MPEG-TS: red circle 0-3 s, blue square 3-6 s, green triangle 6-9 s, yellow cross 9-12 s."""
    path = tmp_path_factory.mktemp("ts") / "cam.ts"
    write_shapes_video(path, SHAPES, seconds_each=SECONDS_EACH, fps=10, size=(96, 96), codec="h264")
    return path.read_bytes()


def header(video_id: str, **kw: Any) -> pb.IngestHeader:
    return pb.IngestHeader(
        video_id=video_id,
        mode=pb.INGEST_MODE_LIVE,
        segment_s=SEGMENT_S,
        sampling=pb.SamplingOptions(fps=SAMPLE_FPS),
        **kw,
    )


def requests(h: pb.IngestHeader, data: bytes, chunk: int = 2048, pause_s: float = 0.0) -> Iterator[pb.IngestRequest]:
    """The header, then the bytes (a camera: `pause_s` between chunks)."""
    yield pb.IngestRequest(header=h)
    for i in range(0, len(data), chunk):
        if pause_s and i:
            time.sleep(pause_s)
        yield pb.IngestRequest(chunk=data[i : i + chunk])


def windows(stub: pb_grpc.VideoSearchStub, video_id: str, complete_only: bool = False) -> list[float]:
    """The sampling windows (start_s) of every frame a search scoped to the video finds, sorted."""
    f = pb.SearchFilters(video_ids=[video_id], complete_only=complete_only)
    hits = stub.Search(pb.SearchRequest(text="a red circle", top_k=100, filters=f), timeout=30).moments
    assert all(m.video_id == video_id for m in hits)
    return sorted(m.start_s for m in hits)


def frames_of(stub: pb_grpc.VideoSearchStub, video_id: str) -> list[tuple[float, float]]:
    """(frame second, score) of every stored frame for each shape's query: the same frames (times and
    pixels, so embeddings) give equal lists."""
    out = []
    for color, shape in SHAPES:
        f = pb.SearchFilters(video_ids=[video_id])
        for m in stub.Search(pb.SearchRequest(text=f"a {color} {shape}", top_k=100, filters=f), timeout=30).moments:
            out.append((m.best_frame_s, round(m.score, 5)))
    return sorted(out)


def get_video(stub: pb_grpc.VideoSearchStub, video_id: str) -> pb.Video | None:
    try:
        return stub.GetVideo(pb.GetVideoRequest(video_id=video_id), timeout=30)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        return None


@pytest.fixture(scope="module")
def descriptor_set(shapes_model_dir: Path) -> str:
    return load_manifest(shapes_model_dir).descriptor_set


@pytest.mark.parametrize("restart", ["server", "launcher"])
def test_a_video_left_live_by_a_crash_is_interrupted_at_start_and_resumable(
    shapes_model_dir: Path, descriptor_set: str, stream_bytes: bytes, tmp_path: Path, restart: str
) -> None:
    first, _ = start_server(shapes_model_dir, tmp_path)
    committed = None
    try:
        with grpc.insecure_channel(first.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            call = stub.Ingest(requests(header("crashed"), stream_bytes, pause_s=0.2), timeout=60)
            for ev in call:
                if ev.WhichOneof("event") == "accepted":
                    upload_id = ev.accepted.upload_id
                if ev.WhichOneof("event") == "committed" and ev.committed.media_s >= 2.0:
                    committed = ev.committed
                    assert get_video(stub, "crashed").state == "live"  # type: ignore[union-attr]
                    first.stop(sig_kill=True)
                    break
    finally:
        first.stop(sig_kill=True)
    assert committed is not None
    # a server alone marks them; with --workers the launcher that owns the store does
    second, port = start_server(shapes_model_dir, tmp_path, *(["--workers", "2"] if restart == "launcher" else []))
    store = Store(port, descriptor_set)
    try:
        with grpc.insecure_channel(second.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            video = get_video(stub, "crashed")
            assert video is not None and video.state == "interrupted", video
            assert video.frames >= committed.frames and video.size_bytes >= committed.bytes
            parts = store.of_video("crashed")
            assert parts["states"] == ["interrupted"] and parts["descriptors"] == video.frames, parts
            assert windows(stub, "crashed") == [k / SAMPLE_FPS for k in range(video.frames)]
            assert windows(stub, "crashed", complete_only=True) == []
            # still resumable, from where the server stands
            events = list(
                stub.Ingest(
                    requests(
                        header("crashed", resume_upload_id=upload_id, resume_offset=video.size_bytes),
                        stream_bytes[video.size_bytes :],
                    ),
                    timeout=60,
                )
            )
            assert events[0].accepted.offset == video.size_bytes
            done = events[-1].done
            assert done.video.state == "complete" and done.frames == FRAMES
            assert windows(stub, "crashed", complete_only=True) == [k / SAMPLE_FPS for k in range(FRAMES)]
            assert store.of_video("crashed")["states"] == ["complete"]
    finally:
        store.close()
        second.stop()
