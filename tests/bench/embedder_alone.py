"""The server's own Embedder alone in this process (built as `moments_server.app.start` builds it: the same
settings, towers, warm-up and micro-batchers), fed by concurrent callers on one event loop: the search rate
the serving path would reach if gRPC, the store and the service cost nothing. The baseline of the
"Search through gRPC vs the Embedder alone" figures."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

from tests.bench.load import LoadResult, query_texts

T = TypeVar("T")


def preload_cuda() -> None:
    """Load the CUDA and cuDNN libraries onnxruntime-gpu needs (torch's, else onnxruntime's own lookup)
    before the first CUDA session; nothing without the CUDA provider."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return
    try:
        import torch  # noqa: F401
    except ImportError:
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()


class EmbedderAlone:
    def __init__(self, model_dir: Path, device: str = "auto", **settings: Any) -> None:
        from moments_server.config import Settings

        self.settings = Settings(model_dir=model_dir, device=device, **settings)
        if device != "cpu":
            preload_cuda()
        # one loop for the object's life: the batchers' tasks wait on it between measurements
        self.loop = asyncio.new_event_loop()
        self.embedder = self._run(self._build())
        self.provider = self.embedder.text_tower.provider
        self.text_max_batch = self.embedder.text_batcher.max_batch

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _build(self) -> Any:
        from moments_server.inference.embedder import Embedder
        from moments_server.inference.manifest import load_manifest
        from moments_server.inference.policy import policy_of
        from moments_server.inference.sessions import load_towers

        s = self.settings
        manifest = load_manifest(s.model_dir)
        text, image = load_towers(manifest, s.device, s.threads, s.ort_spinning)
        policy = policy_of(text.provider, s)
        embedder = Embedder(manifest, text, image, policy, s.max_delay_ms / 1e3, s.max_queue, s.text_cache_size)
        # texts only here: the image tower is warmed at batch 1 instead of timed at every batch size
        embedder.image_batcher.max_batch = 1
        embedder.warm_up(s.autotune_batches)
        embedder.image_batcher.max_batch = policy.image_max_batch
        embedder.start()
        return embedder

    def measure(self, callers: int, duration_s: float, prefix: str = "alone ") -> LoadResult:
        """`callers` concurrent callers, each embedding one distinct query text (a cache miss) back to back."""

        async def load() -> LoadResult:
            texts = query_texts(prefix)
            res = LoadResult(callers, 0.0)
            started = time.perf_counter()
            deadline = started + duration_s

            async def one() -> None:
                while time.perf_counter() < deadline:
                    t = time.perf_counter()
                    await self.embedder.embed_texts([next(texts)])
                    res.latencies_s.append(time.perf_counter() - t)

            await asyncio.gather(*(one() for _ in range(callers)))
            res.wall_s = time.perf_counter() - started
            return res

        self._run(self.embedder.embed_texts(["warm up the embedder alone"]))
        return self._run(load())

    def close(self) -> None:
        try:
            self._run(self.embedder.stop())
        finally:
            self.loop.close()

    def __enter__(self) -> EmbedderAlone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
