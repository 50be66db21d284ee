"""Ingest inference at a lower OS priority (inference/priority.py): the image tower's batch thread and the
intra-op threads onnxruntime creates with its session run at the raised nice value; the text tower's do not."""

from __future__ import annotations

import asyncio
import sys
import time
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
