"""Stateless replicas on one store: two Moments servers on `--store aperturedb://` (the embedded store's wire
listener standing in for ApertureDB), started at the same moment. What one writes the other serves at once:
an ingest, a new metadata key in a filter (no cache of keys goes stale), a replace and a delete."""

from __future__ import annotations

import threading
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.live import LiveServer, StoreListener
from tests.server.conftest import ingest, value


def start_together(model_dir: Path, store: str, workdir: Path, n: int) -> list[LiveServer]:
    """n servers whose start-ups (descriptor set check included) run at the same time."""
    servers: list[LiveServer | None] = [None] * n
    errors: list[BaseException] = []

    def start(i: int) -> None:
        try:
            servers[i] = LiveServer(model_dir, store, workdir / f"r{i}")
        except BaseException as e:
            errors.append(e)

    for i in range(n):
        (workdir / f"r{i}").mkdir()
    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for s in servers:
            if s is not None:
                s.stop()
        raise errors[0]
    return [s for s in servers if s is not None]


def where(key: str, text: str) -> pb.Condition:
    return pb.Condition(key=key, op=pb.Condition.EQ, values=[value(text)])


@pytest.fixture()
def replicas(shapes_model_dir: Path, tmp_path: Path):
    listener = StoreListener(tmp_path / "adb", tmp_path)
    servers = start_together(shapes_model_dir, listener.url, tmp_path, 2)
    channels = [grpc.insecure_channel(s.target) for s in servers]
    try:
        yield [pb_grpc.VideoSearchStub(c) for c in channels]
    finally:
        for c in channels:
            c.close()
        for s in servers:
            s.stop()
        listener.stop()


def test_what_one_replica_writes_the_other_serves(replicas: list, video_files: dict) -> None:
    a, b = replicas
    north, north_segments = video_files["cam-north"]
    south, south_segments = video_files["cam-south"]
    site = pb.SearchFilters(conditions=[where("site", "dock")])

    # b has never seen the key: refused, as any unknown key is
    with pytest.raises(grpc.RpcError) as unknown:
        b.Search(pb.SearchRequest(text="a red circle", top_k=5, filters=site), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "site" in (unknown.value.details() or "")

    ingest(a, north, "v1", metadata={"site": "dock"})
    # ... and accepted by b right after a stored it (no refresh interval to wait out)
    reply = b.Search(pb.SearchRequest(text=north_segments[0].caption, top_k=5, filters=site), timeout=30)
    assert reply.moments and {m.video_id for m in reply.moments} == {"v1"}
    assert reply.moments[0].start_s < north_segments[0].end_s

    # a replace through b is what a serves
    ingest(b, south, "v1", metadata={"site": "yard"}, replace=True)
    got = a.GetVideo(pb.GetVideoRequest(video_id="v1"), timeout=30)
    assert got.metadata["site"].string_value == "yard"
    assert got.codec == "vp9"
    assert not a.Search(pb.SearchRequest(text="a red circle", top_k=5, filters=site), timeout=30).moments
    yard = pb.SearchFilters(conditions=[where("site", "yard")])
    reply = a.Search(pb.SearchRequest(text=south_segments[0].caption, top_k=5, filters=yard), timeout=30)
    assert reply.moments and reply.moments[0].start_s < south_segments[0].end_s

    # a delete through a is gone from b
    a.DeleteVideo(pb.DeleteVideoRequest(video_id="v1"), timeout=30)
    with pytest.raises(grpc.RpcError) as gone:
        b.GetVideo(pb.GetVideoRequest(video_id="v1"), timeout=30)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
    assert not b.Search(pb.SearchRequest(text="a blue square", top_k=10), timeout=30).moments
    assert not b.ListVideos(pb.ListVideosRequest(), timeout=30).videos
