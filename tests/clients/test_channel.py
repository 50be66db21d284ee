"""The client's channel defaults against a scripted in-process server (no model needed): retries on UNAVAILABLE for
idempotent calls only, the bearer token, deadlines; and the CLI's parsing of values and conditions."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime
from typing import Any

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import Client, MomentsError
from moments_client.cli import UsageError, parse_meta, parse_value, parse_where
from moments_client.types import conditions


class Flaky(pb_grpc.VideoSearchServicer):
    """Answers UNAVAILABLE `failures` times per method, then succeeds; records calls and metadata."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.metadata: list[dict[str, str]] = []
        self.lock = threading.Lock()

    def _count(self, method: str, context: grpc.ServicerContext) -> bool:
        with self.lock:
            self.calls[method] = self.calls.get(method, 0) + 1
            self.metadata.append(dict(context.invocation_metadata()))  # type: ignore[arg-type]
            return self.calls[method] <= self.failures

    def Info(self, request: Any, context: grpc.ServicerContext) -> pb.InfoResponse:
        if self._count("Info", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.InfoResponse(model=pb.ModelInfo(name="fake"), store="embedded")

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        if self._count("Search", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "warming up")
        return pb.SearchResponse(moments=[pb.Moment(video_id="v", start_s=1, end_s=2, best_frame_s=1, score=0.5)])

    def GetVideo(self, request: pb.GetVideoRequest, context: grpc.ServicerContext) -> pb.Video:
        self._count("GetVideo", context)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no video {request.video_id!r}")
        raise AssertionError

    def DeleteVideo(self, request: pb.DeleteVideoRequest, context: grpc.ServicerContext) -> pb.DeleteVideoResponse:
        if self._count("DeleteVideo", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        return pb.DeleteVideoResponse(frames_deleted=3)

    def Ingest(self, request_iterator: Iterator[pb.IngestRequest], context: grpc.ServicerContext) -> Iterator[Any]:
        for _ in request_iterator:
            pass
        if self._count("Ingest", context):
            context.abort(grpc.StatusCode.UNAVAILABLE, "busy")
        yield pb.IngestEvent(accepted=pb.IngestAccepted(video_id="v"))


@pytest.fixture
def flaky() -> Iterator[tuple[Flaky, str]]:
    servicer = Flaky(failures=2)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_VideoSearchServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(None)


def test_idempotent_calls_are_retried_on_unavailable(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with Client(target, token="t0k") as client:
        assert client.info().model.name == "fake"
        assert client.search("x")[0].video_id == "v"
    assert servicer.calls == {"Info": 3, "Search": 3}
    assert all(md.get("authorization") == "Bearer t0k" for md in servicer.metadata)


def test_other_codes_and_non_idempotent_calls_are_not_retried(flaky: tuple[Flaky, str]) -> None:
    servicer, target = flaky
    with Client(target) as client:
        with pytest.raises(MomentsError) as e:
            client.get_video("nope")
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(MomentsError) as e:
            client.delete_video("v")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.retryable
        with pytest.raises(MomentsError) as e:
            client.ingest(b"1234", "v")
        assert e.value.code == grpc.StatusCode.UNAVAILABLE and e.value.method == "Ingest"
    assert servicer.calls == {"GetVideo": 1, "DeleteVideo": 1, "Ingest": 1}
    assert all("authorization" not in md for md in servicer.metadata)


def test_values_and_conditions() -> None:
    assert parse_value("3") == 3.0 and parse_value("true") is True and parse_value('"3"') == "3"
    assert parse_value("2024-05-01T10:00:00+00:00") == datetime.fromisoformat("2024-05-01T10:00:00+00:00")
    assert parse_value("north") == "north"
    assert parse_meta(["camera=north", "floor=2"]) == {"camera": "north", "floor": 2.0}
    assert parse_where(["floor>=2", "camera=north", "x!=1", "site in a,b", "y<3", "z<=4", "w>5", "v==6"]) == [
        ("floor", ">=", 2.0),
        ("camera", "==", "north"),
        ("x", "!=", 1.0),
        ("site", "in", ["a", "b"]),
        ("y", "<", 3.0),
        ("z", "<=", 4.0),
        ("w", ">", 5.0),
        ("v", "==", 6.0),
    ]
    with pytest.raises(UsageError, match="--video"):
        parse_where(["video_id=cam-1"])
    conds = conditions({"floor": (">=", 2), "site": ["a", "b"], "ok": True})
    assert [(c.key, pb.Condition.Op.Name(c.op), len(c.values)) for c in conds] == [
        ("floor", "GE", 1),
        ("site", "IN", 2),
        ("ok", "EQ", 1),
    ]
    assert conds[2].values[0].bool_value is True
    with pytest.raises(ValueError):
        conditions([("floor", "~", 1)])
