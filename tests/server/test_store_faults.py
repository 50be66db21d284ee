"""A remote store that goes away under load (`--store aperturedb://`, the embedded store's wire listener
standing in for ApertureDB): calls get UNAVAILABLE with a message, health turns NOT_SERVING; when the
store is back on its address the connector reconnects and health returns to SERVING; no ingest is
reported done that the store did not commit."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer, StoreListener
from tests.server.conftest import ingest, ingest_requests

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _health(channel: grpc.Channel) -> int:
    return int(health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def _wait_health(channel: grpc.Channel, want: int, within_s: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within_s:
        if _health(channel) == want:
            return time.monotonic() - t0
        time.sleep(0.2)
    raise AssertionError(f"health is not {want} after {within_s} s")


class Load:
    """Searchers and an ingest loop in threads, recording statuses and acknowledged ingests."""

    def __init__(self, target: str, video: Path) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.VideoSearchStub(self.channel)
        self.video = video
        self.codes: Counter[str] = Counter()
        self.messages: dict[str, str] = {}
        self.acked: dict[str, int] = {}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._search, daemon=True) for _ in range(4)]
        self.threads.append(threading.Thread(target=self._ingest, daemon=True))

    def _note(self, e: grpc.RpcError) -> None:
        self.codes[e.code().name] += 1
        self.messages.setdefault(e.code().name, e.details() or "")

    def _search(self) -> None:
        while not self.stop.is_set():
            try:
                self.stub.Search(pb.SearchRequest(text="a red circle", top_k=5), timeout=30)
                self.codes["OK"] += 1
            except grpc.RpcError as e:
                self._note(e)
                time.sleep(0.1)

    def _ingest(self) -> None:
        n = 0
        while not self.stop.is_set():
            vid = f"during-{n}"
            n += 1
            try:
                for ev in self.stub.Ingest(ingest_requests(self.video, vid), timeout=60):
                    if ev.WhichOneof("event") == "done":
                        self.acked[vid] = ev.done.frames
            except grpc.RpcError as e:
                self._note(e)
                time.sleep(0.2)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(90)
        self.channel.close()


def test_store_outage_under_load(shapes_model_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    write_shapes_video(video, [("red", "circle"), ("blue", "square")], seconds_each=1.0, size=(64, 64))
    listener = StoreListener(tmp_path / "adb", tmp_path)
    server = LiveServer(shapes_model_dir, listener.url, tmp_path, "--no-autotune-batches")
    try:
        with grpc.insecure_channel(server.target) as channel:
            stub = pb_grpc.VideoSearchStub(channel)
            assert ingest(stub, video, "before")[-1].WhichOneof("event") == "done"
            with Load(server.target, video) as load:
                time.sleep(2.0)
                assert load.codes["OK"] > 0, load.codes
                listener.stop(sig_kill=True)
                down_after = _wait_health(channel, NOT_SERVING, 30)
                with pytest.raises(grpc.RpcError) as err:
                    stub.Search(pb.SearchRequest(text="a blue square"), timeout=30)
                assert err.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "does not answer" in (err.value.details() or ""), err.value.details()
                time.sleep(1.0)
                listener = StoreListener(tmp_path / "adb", tmp_path, port=listener.port)  # back where it was
                up_after = _wait_health(channel, SERVING, 30)
                ok_before = load.codes["OK"]
                time.sleep(2.0)
                assert load.codes["OK"] > ok_before, "searches do not succeed again after the store came back"
            # during the outage: UNAVAILABLE, nothing vaguer
            assert set(load.codes) <= {"OK", "UNAVAILABLE"}, (load.codes, load.messages)
            assert load.codes["UNAVAILABLE"] > 0
            for vid, frames in {"before": 2, **load.acked}.items():  # acknowledged means committed
                assert stub.GetVideo(pb.GetVideoRequest(video_id=vid), timeout=10).frames == frames
            print(f"NOT_SERVING {down_after:.1f} s after the kill, SERVING {up_after:.1f} s after the restart")
    finally:
        server.stop()
        listener.stop()
