"""Micro-batcher: batch formation, lane priority, cancellation, expiry and overflow, on a real ONNX session."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from moments_server.errors import Expired, QueueFull
from moments_server.inference.batcher import Lane, MicroBatcher

DIM = 8


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> ort.InferenceSession:
    """A tiny real model: x (n, 4) → normalize(x @ W) (n, 8)."""
    weights = np.random.default_rng(0).normal(size=(4, DIM)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("LpNormalization", ["y"], ["out"], axis=1, p=2),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["n", DIM])],
        [helper.make_tensor("w", TensorProto.FLOAT, weights.shape, weights.flatten())],
    )
    path: Path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class Recorder:
    """Runs the session and records every batch it was given; can hold a batch until released."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.batches: list[list[float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, items: list[np.ndarray]) -> list[np.ndarray]:
        self.entered.set()
        self.gate.wait(10)
        self.batches.append([float(x[0]) for x in items])
        return list(self.session.run(None, {"x": np.stack(items)})[0])


def item(i: float) -> np.ndarray:
    return np.array([i, 1.0, 2.0, 3.0], dtype=np.float32)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_batches_form_up_to_max_batch_and_match_unbatched(session: ort.InferenceSession) -> None:
    async def main() -> None:
        rec = Recorder(session)
        b = MicroBatcher("t", rec, max_batch=4, max_delay_s=0.05, max_queue=100)
        b.start()
        results = await asyncio.gather(*(b.submit(item(i)) for i in range(10)))
        await b.stop()
        assert [len(x) for x in rec.batches] == [4, 4, 2]
        for i, r in enumerate(results):
            alone = session.run(None, {"x": item(i)[None]})[0][0]
            np.testing.assert_allclose(r.value, alone, rtol=1e-5, atol=1e-6)
            assert r.batch_size in (4, 2) and r.inference_s > 0 and r.queue_s >= 0

    run(main())


def test_a_lone_request_runs_at_once_and_company_waits_for_more(session: ort.InferenceSession) -> None:
    async def main() -> None:
        rec = Recorder(session)
        b = MicroBatcher("t", rec, max_batch=64, max_delay_s=0.5, max_queue=100)
        b.start()
        lone = await b.submit(item(1))
        # two requests arriving together: company is likely, so the batch waits (up to max_delay) for more
        pair = await asyncio.gather(b.submit(item(2)), b.submit(item(3)))
        await b.stop()
        assert rec.batches == [[1.0], [2.0, 3.0]]
        assert lone.queue_s < 0.25  # nobody else in sight: no wait for company
        assert all(0.4 <= r.queue_s < 2.0 for r in pair)  # waited about max_delay, then ran together

    run(main())


def test_search_lane_goes_before_ingest_lane(session: ort.InferenceSession) -> None:
    async def main() -> None:
        rec = Recorder(session)
        rec.gate.clear()
        b = MicroBatcher("t", rec, max_batch=3, max_delay_s=0.001, max_queue=100)
        b.start()
        first = asyncio.ensure_future(b.submit(item(0), Lane.INGEST))
        while not rec.entered.is_set():  # the first batch is running and held
            await asyncio.sleep(0.001)
        ingest = [asyncio.ensure_future(b.submit(item(10 + i), Lane.INGEST)) for i in range(4)]
        await asyncio.sleep(0.01)
        search = [asyncio.ensure_future(b.submit(item(100 + i), Lane.SEARCH)) for i in range(2)]
        await asyncio.sleep(0.01)
        rec.gate.set()
        await asyncio.gather(first, *ingest, *search)
        await b.stop()
        # Queued while the first batch ran: the two searches go first although they came last.
        assert rec.batches[1] == [100.0, 101.0, 10.0]
        assert rec.batches[2] == [11.0, 12.0, 13.0]

    run(main())


def test_cancelled_and_expired_requests_cost_no_inference(session: ort.InferenceSession) -> None:
    async def main() -> None:
        rec = Recorder(session)
        rec.gate.clear()
        b = MicroBatcher("t", rec, max_batch=8, max_delay_s=0.001, max_queue=100)
        b.start()
        blocker = asyncio.ensure_future(b.submit(item(0)))
        while not rec.entered.is_set():
            await asyncio.sleep(0.001)
        cancelled = asyncio.ensure_future(b.submit(item(1)))
        expired = asyncio.ensure_future(b.submit(item(2), deadline=time.perf_counter() + 0.005))
        kept = asyncio.ensure_future(b.submit(item(3)))
        await asyncio.sleep(0.02)
        cancelled.cancel()
        rec.gate.set()
        await blocker
        assert (await kept).batch_size == 1
        with pytest.raises(Expired):
            await expired
        await b.stop()
        assert rec.batches == [[0.0], [3.0]]

    run(main())


def test_full_queue_is_refused(session: ort.InferenceSession) -> None:
    async def main() -> None:
        rec = Recorder(session)
        rec.gate.clear()
        b = MicroBatcher("t", rec, max_batch=2, max_delay_s=0.001, max_queue=3)
        b.start()
        running = asyncio.ensure_future(b.submit(item(0)))
        while not rec.entered.is_set():
            await asyncio.sleep(0.001)
        queued = [asyncio.ensure_future(b.submit(item(i))) for i in range(1, 4)]
        await asyncio.sleep(0.005)
        with pytest.raises(QueueFull, match="queue is full"):
            await b.submit(item(9))
        rec.gate.set()
        await asyncio.gather(running, *queued)
        await b.stop()
        assert sum(len(x) for x in rec.batches) == 4

    run(main())


def test_ingest_batches_wait_for_another_towers_searches(session: ort.InferenceSession) -> None:
    async def main() -> None:
        text_rec, image_rec = Recorder(session), Recorder(session)
        text_rec.gate.clear()
        text = MicroBatcher("text", text_rec, max_batch=4, max_delay_s=0.001, max_queue=100)
        image = MicroBatcher("image", image_rec, max_batch=4, max_delay_s=0.001, max_queue=100)
        image.defer_ingest_to(text)
        image.max_defer_s = 5.0
        text.start()
        image.start()
        query = asyncio.ensure_future(text.submit(item(1), Lane.SEARCH))
        while not text_rec.entered.is_set():
            await asyncio.sleep(0.001)
        frames = asyncio.ensure_future(image.submit(item(2), Lane.INGEST))
        await asyncio.sleep(0.05)
        assert image_rec.batches == []  # held back while the text search runs
        text_rec.gate.set()
        await query
        await frames
        assert image_rec.batches == [[2.0]]
        # An image *search* is not held back.
        text_rec.gate.clear()
        text_rec.entered.clear()
        query = asyncio.ensure_future(text.submit(item(3), Lane.SEARCH))
        while not text_rec.entered.is_set():
            await asyncio.sleep(0.001)
        await asyncio.wait_for(image.submit(item(4), Lane.SEARCH), 2)
        text_rec.gate.set()
        await query
        await text.stop()
        await image.stop()

    run(main())


def test_ingest_batches_shrink_while_another_tower_serves_searches(session: ort.InferenceSession) -> None:
    async def main() -> None:
        text_rec, image_rec = Recorder(session), Recorder(session)
        text = MicroBatcher("text", text_rec, max_batch=4, max_delay_s=0.001, max_queue=100)
        image = MicroBatcher("image", image_rec, max_batch=8, max_delay_s=0.001, max_queue=100)
        image.defer_ingest_to(text)
        text.start()
        image.start()
        await image.submit_many([item(i) for i in range(8)], Lane.INGEST)
        await text.submit(item(100), Lane.SEARCH)  # a search: ingest batches stay short for a while
        await image.submit_many([item(i) for i in range(8)], Lane.INGEST)
        text._last_search -= text.recent_search_s  # long ago: full batches again
        await image.submit_many([item(i) for i in range(8)], Lane.INGEST)
        await text.stop()
        await image.stop()
        assert [len(b) for b in image_rec.batches] == [8, 2, 2, 2, 2, 8]

    run(main())
