"""The serving policy per provider (inference/policy.py), explicit settings over it, and what it does to a real
pair of micro-batchers: under the CUDA policy ingest keeps running beside a pending search in bounded batches,
under the CPU policy it waits for the search."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from moments_server.config import Settings
from moments_server.inference.batcher import Lane, MicroBatcher
from moments_server.inference.policy import CPU_POLICY, CUDA, CUDA_POLICY, ServingPolicy, policy_of, serving_policy


def test_each_provider_has_its_policy() -> None:
    cpu = serving_policy("CPUExecutionProvider")
    assert cpu == CPU_POLICY
    assert (cpu.pad_to_buckets, cpu.text_max_batch, cpu.image_max_batch) == (False, 32, 32)
    assert (cpu.ingest_defer_s, cpu.ingest_batch_while_searching) == (0.5, 2)
    cuda = serving_policy(CUDA)
    assert cuda == CUDA_POLICY and cuda.cuda and not cpu.cuda
    assert (cuda.pad_to_buckets, cuda.text_max_batch, cuda.image_max_batch) == (True, 512, 256)
    assert (cuda.ingest_defer_s, cuda.ingest_batch_while_searching) == (0.0, 64)
    # image queries: a session of their own on the CPU (nice sets priorities there), the ingest one on CUDA
    assert cpu.image_search_session and not cuda.image_search_session
    assert not policy_of("CPUExecutionProvider", Settings(image_search_session=False)).image_search_session
    # any other provider is served as the CPU is
    other = serving_policy("OpenVINOExecutionProvider")
    assert other.provider == "OpenVINOExecutionProvider" and not other.pad_to_buckets and other.image_max_batch == 32


def test_explicit_settings_win_over_the_providers_defaults() -> None:
    assert policy_of(CUDA, Settings()) == CUDA_POLICY  # nothing set: the provider's defaults
    s = Settings(text_max_batch=64, image_max_batch=8, ingest_defer_s=0.25, ingest_batch_while_searching=16)
    for provider in ("CPUExecutionProvider", CUDA):
        p = policy_of(provider, s)
        assert (p.text_max_batch, p.image_max_batch, p.ingest_defer_s, p.ingest_batch_while_searching) == (
            64,
            8,
            0.25,
            16,
        )
    assert policy_of(CUDA, s).pad_to_buckets and not policy_of("CPUExecutionProvider", s).pad_to_buckets
    assert policy_of(CUDA, Settings(ingest_defer_s=0)).ingest_defer_s == 0.0  # 0 is a value, not "unset"
    with pytest.raises(ValueError, match="provider's default"):
        Settings(image_max_batch=0)
    with pytest.raises(ValueError, match="never waits"):
        Settings(ingest_defer_s=-1)


class Log:
    """Trivial run functions for both towers (this checks scheduling, not embeddings) writing one shared log
    of (tower, batch size) in the order the batches ran; the text tower's batch can be held."""

    def __init__(self) -> None:
        self.order: list[tuple[str, int]] = []
        self.text_gate = threading.Event()
        self.text_entered = threading.Event()
        self.lock = threading.Lock()

    def text(self, items: list[np.ndarray]) -> list[np.ndarray]:
        self.text_entered.set()
        assert self.text_gate.wait(20), "the test never released the search"
        with self.lock:
            self.order.append(("text", len(items)))
        return [np.asarray(x, dtype=np.float32) * 2 for x in items]

    def image(self, items: list[np.ndarray]) -> list[np.ndarray]:
        with self.lock:
            self.order.append(("image", len(items)))
        return [np.asarray(x, dtype=np.float32) * 2 for x in items]


Pair = tuple[MicroBatcher, MicroBatcher, asyncio.Future, asyncio.Future]


async def _ingest_beside_a_held_search(policy: ServingPolicy, log: Log) -> Pair:
    """A text search held on its tower, then 40 ingest frames for the image tower: (text, image, search, ingest)."""
    text = MicroBatcher("text", log.text, policy.text_max_batch, 0.001, 1000)
    image = MicroBatcher("image", log.image, policy.image_max_batch, 0.001, 1000)
    image.max_defer_s = 60.0  # longer than the test waits: a policy's 0 that is not applied shows
    image.defer_ingest_to(
        text,
        max_defer_s=policy.ingest_defer_s,
        batch_while_searching=policy.ingest_batch_while_searching,
        recent_search_s=policy.recent_search_s,
    )
    text.start()
    image.start()
    search = asyncio.ensure_future(text.submit(np.ones(2), Lane.SEARCH))
    while not log.text_entered.is_set():  # the search is running (and held) on the text tower
        await asyncio.sleep(0.001)
    ingest = asyncio.ensure_future(image.submit_many([np.full(2, i) for i in range(40)], Lane.INGEST))
    return text, image, search, ingest


def test_cuda_policy_keeps_ingest_running_in_bounded_batches_beside_a_pending_search() -> None:
    policy = serving_policy(CUDA, image_max_batch=16, ingest_batch_while_searching=4)
    log = Log()

    async def main() -> None:
        text, image, search, ingest = await _ingest_beside_a_held_search(policy, log)
        # every ingest frame is embedded while the search is still held on the text tower: ingest never waited
        results = await asyncio.wait_for(ingest, 20)
        assert not search.done()
        log.text_gate.set()
        await search
        assert [float(r.value[0]) for r in results] == [2.0 * i for i in range(40)]
        await asyncio.gather(text.stop(), image.stop())

    asyncio.run(main())
    images = [n for tower, n in log.order if tower == "image"]
    assert log.order[-1] == ("text", 1)  # the search finished last, after all 40 frames
    assert sum(images) == 40 and max(images) <= 4  # bounded while the search was pending


def test_cpu_policy_holds_ingest_until_the_search_is_done() -> None:
    # a long defer so that the held search, not the bound on waiting, decides when ingest runs
    policy = serving_policy("CPUExecutionProvider", image_max_batch=16, ingest_defer_s=30.0)
    log = Log()

    async def main() -> None:
        text, image, search, ingest = await _ingest_beside_a_held_search(policy, log)
        for _ in range(50):  # let the image batcher's loop take its turns while the search is held
            await asyncio.sleep(0.001)
        assert not ingest.done()
        log.text_gate.set()
        await search
        await asyncio.wait_for(ingest, 20)
        await asyncio.gather(text.stop(), image.stop())

    asyncio.run(main())
    assert log.order[0] == ("text", 1)  # no image batch ran before the search
    images = [n for tower, n in log.order[1:]]
    assert sum(images) == 40 and max(images) <= policy.ingest_batch_while_searching  # recent search: still short
