"""Get/List/Delete, re-ingest and replace, cancelled ingests, and the status codes of bad input."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from moments.v1 import moments_pb2 as pb
from moments_client.sample_video import write_shapes_video
from moments_server.inference.embedder import buckets
from tests.server.conftest import MAX_UPLOAD, Library, ingest, ingest_requests


def code_of(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code()


def test_get_and_list(library: Library) -> None:
    video = library.stub.GetVideo(pb.GetVideoRequest(video_id="cam-east"))
    assert (video.width, video.height, video.codec) == (320, 240, "mpeg4")
    assert video.frames == 6 and abs(video.duration_s - 6.0) < 0.2
    assert video.metadata["outdoor"].bool_value is True
    page = library.stub.ListVideos(pb.ListVideosRequest(page_size=2))
    assert len(page.videos) == 2 and page.next_page_token
    rest = library.stub.ListVideos(pb.ListVideosRequest(page_size=2, page_token=page.next_page_token))
    ids = [v.video_id for v in page.videos] + [v.video_id for v in rest.videos]
    assert set(library.videos) <= set(ids)
    assert code_of(lambda: library.stub.GetVideo(pb.GetVideoRequest(video_id="nope"))) == grpc.StatusCode.NOT_FOUND


def test_reingest_replace_and_delete(library: Library, tmp_path: Path) -> None:
    first = tmp_path / "first.mp4"
    write_shapes_video(first, [("purple", "cross")] * 2, seconds_each=1.5, seed=11)
    events = ingest(library.stub, first, "swap", metadata={"camera": "roof"})
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "accepted" and kinds[-1] == "done" and "progress" in kinds
    done = events[-1].done
    # windows 0-1, 1-1.5, 1.5-2, 2-3 s: the cut between the two drawings at 1.5 s splits a window (shots)
    assert done.frames == 4 and done.video.metadata["camera"].string_value == "roof"
    last_progress = [e.progress for e in events if e.WhichOneof("event") == "progress"][-1]
    assert last_progress.bytes_received == first.stat().st_size and last_progress.frames_stored == 4

    with pytest.raises(grpc.RpcError) as exists:
        ingest(library.stub, first, "swap")
    assert exists.value.code() == grpc.StatusCode.ALREADY_EXISTS and "--replace" in str(exists.value.details())

    second = tmp_path / "second.mp4"
    write_shapes_video(second, [("orange", "triangle")], seconds_each=2.0, seed=12)
    events = ingest(library.stub, second, "swap", replace=True, metadata={"camera": "roof"})
    assert events[0].accepted.replacing and events[-1].done.frames == 2
    only_swap = pb.SearchFilters(video_ids=["swap"])
    hits = library.stub.Search(pb.SearchRequest(text="a purple cross", top_k=10, filters=only_swap))
    assert sorted(m.best_frame_s for m in hits.moments) == [0.0, 1.0]  # only the new video's two frames

    deleted = library.stub.DeleteVideo(pb.DeleteVideoRequest(video_id="swap"))
    assert deleted.frames_deleted == 2
    assert code_of(lambda: library.stub.GetVideo(pb.GetVideoRequest(video_id="swap"))) == grpc.StatusCode.NOT_FOUND
    hits = library.stub.Search(pb.SearchRequest(text="a orange triangle", top_k=10, filters=only_swap))
    assert len(hits.moments) == 0
    assert (
        code_of(lambda: library.stub.DeleteVideo(pb.DeleteVideoRequest(video_id="swap"))) == grpc.StatusCode.NOT_FOUND
    )


def test_cancelled_ingest_leaves_nothing(library: Library, tmp_path: Path) -> None:
    path = tmp_path / "cancel.mp4"
    write_shapes_video(path, [("red", "circle")] * 3, seed=13)
    accepted = threading.Event()

    def slow_requests():  # type: ignore[no-untyped-def]
        for i, req in enumerate(ingest_requests(path, "cancelled", chunk=4096)):
            yield req
            if i == 2:
                accepted.wait(10)
                threading.Event().wait(0.3)

    call = library.stub.Ingest(slow_requests(), timeout=60)
    for event in call:
        if event.WhichOneof("event") == "accepted":
            accepted.set()
            call.cancel()
            break
    assert code_of(lambda: library.stub.GetVideo(pb.GetVideoRequest(video_id="cancelled"))) == grpc.StatusCode.NOT_FOUND
    hits = library.stub.Search(
        pb.SearchRequest(text="a red circle", top_k=5, filters=pb.SearchFilters(video_ids=["cancelled"]))
    )
    assert len(hits.moments) == 0
    # The id is free again.
    assert ingest(library.stub, path, "cancelled")[-1].WhichOneof("event") == "done"
    library.stub.DeleteVideo(pb.DeleteVideoRequest(video_id="cancelled"))


def _stream(*requests: pb.IngestRequest):  # type: ignore[no-untyped-def]
    yield from requests


def test_bad_ingests(library: Library, tmp_path: Path) -> None:
    stub = library.stub
    header = pb.IngestRequest(header=pb.IngestHeader(video_id="bad"))
    chunk = pb.IngestRequest(chunk=b"\x00\x01not a video at all" * 100)
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    cases = {
        "undecodable": ([header, chunk], invalid),
        "empty upload": ([header], invalid),
        "missing header": ([chunk], invalid),
        "empty stream": ([], invalid),
        "header twice": ([header, header, chunk], invalid),
        "bad id": ([pb.IngestRequest(header=pb.IngestHeader(video_id="no spaces"))], invalid),
        "reserved key": (
            [pb.IngestRequest(header=pb.IngestHeader(video_id="k", metadata={"fps": pb.Value(number_value=1)}))],
            invalid,
        ),
        "fps too high": (
            [pb.IngestRequest(header=pb.IngestHeader(video_id="f", sampling=pb.SamplingOptions(fps=1000)))],
            invalid,
        ),
        "oversize": (
            [header] + [pb.IngestRequest(chunk=b"x" * 1_000_000)] * (MAX_UPLOAD // 1_000_000 + 1),
            grpc.StatusCode.RESOURCE_EXHAUSTED,
        ),
        "checksum": (
            [pb.IngestRequest(header=pb.IngestHeader(video_id="c", sha256="0" * 64)), chunk],
            grpc.StatusCode.DATA_LOSS,
        ),
    }
    for name, (requests, code) in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Ingest(_stream(*requests), timeout=30))
        assert err.value.code() == code, (name, err.value.details())
        assert err.value.details(), name
    assert "decod" in _details(stub, [header, chunk]) or "video" in _details(stub, [header, chunk])
    # Nothing of them is visible, and the server still serves.
    assert code_of(lambda: stub.GetVideo(pb.GetVideoRequest(video_id="bad"))) == grpc.StatusCode.NOT_FOUND
    assert stub.Info(pb.InfoRequest()).model.name == "shapes-demo"


def _details(stub, requests) -> str:  # type: ignore[no-untyped-def]
    try:
        list(stub.Ingest(_stream(*requests), timeout=30))
    except grpc.RpcError as e:
        return str(e.details())
    return ""


def test_bad_searches(library: Library) -> None:
    stub = library.stub
    c = pb.Condition
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    bad = [
        pb.SearchRequest(text="a red circle", top_k=100_000),
        pb.SearchRequest(top_k=5),
        pb.SearchRequest(text="   "),
        pb.SearchRequest(image=b"not an image"),
        pb.SearchRequest(
            text="x",
            filters=pb.SearchFilters(conditions=[c(key="no_such_key", op=c.EQ, values=[pb.Value(string_value="a")])]),
        ),
        pb.SearchRequest(
            text="x",
            filters=pb.SearchFilters(conditions=[c(key="floor", op=c.EQ, values=[pb.Value(string_value="a")])]),
        ),
        pb.SearchRequest(text="x", filters=pb.SearchFilters(conditions=[c(key="floor", op=c.LT, values=[])])),
        pb.SearchRequest(text="x", filters=pb.SearchFilters(start_s=5, end_s=1)),
        pb.SearchRequest(text="x", page_token="garbage!"),
    ]
    for request in bad:
        with pytest.raises(grpc.RpcError) as err:
            stub.Search(request)
        assert err.value.code() == invalid, (request, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(
            pb.SearchRequest(
                text="x",
                filters=pb.SearchFilters(
                    conditions=[c(key="no_such_key", op=c.EQ, values=[pb.Value(string_value="a")])]
                ),
            )
        )
    assert "no_such_key" in str(err.value.details()) and "camera" in str(err.value.details())


def test_info_health_reflection(library: Library) -> None:
    info = library.stub.Info(pb.InfoRequest())
    assert info.model.name == "shapes-demo" and info.model.provider == "CPUExecutionProvider"
    assert info.descriptor_set and info.limits.max_top_k == 100 and info.limits.max_upload_bytes == MAX_UPLOAD
    # what the server loaded: the plain graphs on the CPU, no CUDA graphs, the buckets warmed up to the max
    # batch its autotune chose (at most the CPU policy's cap of 32)
    m, limits = info.model, info.limits
    assert (m.precision, m.fused, m.cuda_graphs) == ("fp32", False, False)
    assert list(m.text_buckets) == buckets(limits.text_max_batch) and list(m.image_buckets) == buckets(
        limits.image_max_batch
    )
    assert m.text_buckets[-1] == limits.text_max_batch <= 32 and m.image_buckets[-1] == limits.image_max_batch <= 32
    channel = grpc.insecure_channel(library.server.target)
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="moments.v1.VideoSearch"))
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    responses = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert "moments.v1.VideoSearch" in names
    channel.close()


def test_metrics_endpoint(library: Library) -> None:
    library.stub.Search(pb.SearchRequest(text="a red circle", top_k=3))
    with urllib.request.urlopen(f"http://127.0.0.1:{library.server.metrics_port}/metrics", timeout=10) as r:
        text = r.read().decode()
    assert 'moments_rpc_calls_total{code="OK",method="Search"}' in text
    assert 'moments_batch_size_bucket{lane="ingest",le=' in text and 'tower="image"' in text
    assert 'moments_ingest_frames_total{stage="stored"}' in text
    assert "moments_store_query_seconds_count" in text
