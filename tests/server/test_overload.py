"""Overload: a full queue is RESOURCE_EXHAUSTED with gRPC's retry pushback trailer (how long to wait), the
server keeps serving, and a request that is too large carries no such invitation to retry."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.live import LiveServer

PUSHBACK = "grpc-retry-pushback-ms"


def test_a_full_queue_says_when_to_retry(shapes_model_dir: Path, tmp_path: Path) -> None:
    server = LiveServer(
        shapes_model_dir, f"embedded:{tmp_path / 'data'}", tmp_path, "--max-queue", "1", "--retry-after-ms", "400"
    )
    try:
        channels = [
            grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(8)
        ]

        def search(i: int) -> tuple[grpc.StatusCode, dict[str, str]]:
            stub = pb_grpc.VideoSearchStub(channels[i % len(channels)])
            try:
                stub.Search(pb.SearchRequest(text=f"a red circle number {i}"), timeout=30)
                return grpc.StatusCode.OK, {}
            except grpc.RpcError as e:
                return e.code(), dict(e.trailing_metadata() or ())

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(search, range(400)))
        full = [md for code, md in results if code == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert full, "no search found the queue full"
        assert all(md.get(PUSHBACK) == "400" for md in full), full[:3]  # --retry-after-ms
        assert any(code == grpc.StatusCode.OK for code, _ in results)
        assert {code for code, _ in results} <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        # a request that can never fit is refused without a retry hint
        stub = pb_grpc.VideoSearchStub(channels[0])
        try:
            stub.Search(pb.SearchRequest(text="x", top_k=100_000), timeout=30)
            raise AssertionError("an oversized top_k was accepted")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert PUSHBACK not in dict(e.trailing_metadata() or ())
        for ch in channels:
            ch.close()
    finally:
        server.stop()
