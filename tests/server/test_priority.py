"""Ingest inference at a lower OS priority (inference/priority.py): the image tower's batch thread and the
intra-op threads onnxruntime creates with its session run at the raised nice value; the text tower's do not."""

from __future__ import annotations

import asyncio
import io
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from moments_server.inference.batcher import Lane, MicroBatcher
from moments_server.inference.manifest import load_manifest
from moments_server.inference.priority import in_lowered_thread, thread_nice
from moments_server.inference.sessions import load_towers

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")


def task_nices() -> dict[int, int]:
    """Every thread of this process: its nice value (/proc/self/task/<tid>/stat, field 19)."""
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            fields = task.joinpath("stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
        out[int(task.name)] = int(fields[16])  # fields after "(comm)" start at field 3
    return out


def test_a_lowered_thread_and_what_it_creates_run_lower() -> None:
    base = thread_nice()
    assert in_lowered_thread(3, thread_nice) == base + 3
    assert thread_nice() == base  # the caller keeps its own
    with pytest.raises(ZeroDivisionError):
        in_lowered_thread(3, lambda: 1 / 0)
    assert in_lowered_thread(0, thread_nice) == base  # 0: the caller's own thread


def test_image_tower_threads_run_lower_than_the_text_towers(shapes_model_dir: Path) -> None:
    base = thread_nice()
    before = set(task_nices())
    text, image = load_towers(load_manifest(shapes_model_dir), "cpu", threads=2, image_nice=5)
    # each session made one intra-op thread (threads=2: the caller is the other); the image tower's is lower.
    # The thread that built the image session has returned, but its task may linger in /proc for a moment.
    deadline = time.monotonic() + 5
    while True:
        new = sorted(nice for tid, nice in task_nices().items() if tid not in before)
        if new == [base, base + 5] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert new == [base, base + 5]

    seen: list[int] = []

    def run(items: list[np.ndarray]) -> list[np.ndarray]:
        seen.append(thread_nice())
        return items

    async def main() -> None:
        batcher = MicroBatcher("image", run, 4, 0.001, 16, nice=5)
        batcher.start()
        await batcher.submit(np.zeros(2), Lane.INGEST)
        await batcher.stop()

    asyncio.run(main())
    assert seen == [base + 5]
    del text, image


def test_a_twin_session_runs_at_the_given_priority_and_embeds_alike(shapes_model_dir: Path) -> None:
    """Tower.twin: image queries' own session (policy.image_search_session) is built at normal priority, beside
    an image tower built lower, and gives the same embeddings."""
    base = thread_nice()
    _, image = load_towers(load_manifest(shapes_model_dir), "cpu", threads=2, image_nice=5)
    before = set(task_nices())
    twin = image.twin()
    new = sorted(nice for tid, nice in task_nices().items() if tid not in before)
    assert new == [base]  # its one intra-op thread (threads=2), at the creating thread's priority
    assert twin.session is not image.session
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    np.testing.assert_allclose(twin.embed(frames), image.embed(frames), atol=1e-6)


def test_image_queries_run_at_the_searches_priority_beside_ingest(shapes_model_dir: Path, tmp_path: Path) -> None:
    """The server's core under the CPU policy: an image query goes through its own batcher and session, whose
    threads run at normal priority, while ingest frames run lower (in the ingest session: they would queue an
    image query behind an ingest batch and run it at ingest's priority)."""
    from PIL import Image

    from moments_server.config import Settings
    from moments_server.core import open_core
    from moments_server.service.requests import SearchQuery
    from moments_shapes import draw

    png = io.BytesIO()
    Image.fromarray(draw("red", "circle", (96, 96), 0)).save(png, format="PNG")
    settings = Settings(
        model_dir=shapes_model_dir,
        store=f"embedded:{tmp_path / 'data'}",
        spool_dir=tmp_path / "spool",
        autotune_batches=False,
        metrics_listen="127.0.0.1:0",
        device="cpu",
        ingest_nice=5,
    )
    base = thread_nice()
    ran: list[tuple[str, int]] = []  # (batcher, nice of the thread that ran its batch), in the order they ran

    def spying(name: str, run: Callable[[list[np.ndarray]], Sequence[np.ndarray]]) -> Callable[..., list[np.ndarray]]:
        def spy(items: list[np.ndarray]) -> list[np.ndarray]:
            ran.append((name, thread_nice()))
            return list(run(items))

        return spy

    async def main() -> None:
        core = await open_core(settings)
        try:
            await core.prepare()
            e = core.embedder
            assert e.policy.image_search_session and e.image_search_batcher is not e.image_batcher
            for batcher in (e.image_batcher, e.image_search_batcher):
                batcher._run = spying(batcher.name, batcher._run)
            frame = np.zeros((e.image_size, e.image_size, 3), np.uint8)
            await e.embed_frames([frame, frame], Lane.INGEST)
            await core.search.search(SearchQuery(image=png.getvalue(), top_k=3), None)
        finally:
            await core.close()

    asyncio.run(main())
    assert ran == [("image", base + 5), ("image_search", base)]
