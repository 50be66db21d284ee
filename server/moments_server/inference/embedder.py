"""Text and image embeddings through one micro-batcher per tower, with an LRU cache for query texts."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, cast

import numpy as np

from moments_server import metrics
from moments_server.inference.batcher import Lane, MicroBatcher, Result
from moments_server.inference.manifest import ModelManifest
from moments_server.inference.policy import ServingPolicy
from moments_server.inference.sessions import Tower
from moments_server.inference.tokenizer import TextTokenizer
from moments_server.pictures import decode_image

log = logging.getLogger(__name__)
K = TypeVar("K")


@dataclass
class Embedded:
    vectors: np.ndarray  # (n, dim) float32, L2-normalised
    queue_s: float
    inference_s: float


@dataclass
class StreamEmbedded(Generic[K]):
    """One frame of Embedder.embed_stream, back in order: what the caller sent with it, its vector, and its
    share of its batch's inference time."""

    key: K
    vector: np.ndarray
    inference_s: float


TRIM_MULTIPLE = 8  # trimmed lengths are rounded up to this: fewer distinct shapes, at most 7 padding ids


def last_token_length(ids: np.ndarray) -> int:
    """Positions up to the last token of a batch's longest row (padding ids are 0 after each row's last
    token): the shortest cut that changes no embedding of a causal tower that pools the end-of-text token."""
    used = np.flatnonzero(ids.any(axis=0))
    return int(used[-1]) + 1 if len(used) else 1


def trimmed_length(ids: np.ndarray, context_length: int) -> int:
    """The positions the server runs a batch of padded ids on: last_token_length rounded up to TRIM_MULTIPLE,
    at most context_length (the export verifies the shortest cut and the one after it)."""
    return min(context_length, -(-last_token_length(ids) // TRIM_MULTIPLE) * TRIM_MULTIPLE)


def buckets(max_batch: int) -> list[int]:
    """Batch sizes worth warming: powers of two up to max_batch, and max_batch itself."""
    sizes = [1]
    while sizes[-1] * 2 < max_batch:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sizes


class Embedder:
    def __init__(
        self,
        manifest: ModelManifest,
        text: Tower,
        image: Tower,
        policy: ServingPolicy,
        max_delay_s: float,
        max_queue: int,
        cache_size: int,
        image_search: Tower | None = None,
    ) -> None:
        """image_search: a second session of the image tower (Tower.twin) for image queries, served by a batcher
        of its own at normal priority (policy.image_search_session); None: they go through the ingest one."""
        self.manifest = manifest
        self.text_tower, self.image_tower, self.image_search_tower = text, image, image_search
        self.tokenizer = TextTokenizer(manifest.tokenizer_path, manifest.context_length)
        self.image_size = manifest.image_size
        self.framing = manifest.framing
        self.dim = manifest.embed_dim
        self.policy = policy
        if policy.pad_to_buckets:  # device buffers per bucket (and per text length): batches are padded up to one
            lengths = [n for n in policy.text_lengths if n < manifest.context_length] if manifest.text_trim else []
            text.use_buckets(buckets(policy.text_max_batch), (manifest.context_length,), manifest.embed_dim, lengths)
            size = manifest.image_size
            image.use_buckets(buckets(policy.image_max_batch), (size, size, 3), manifest.embed_dim)
        self.text_batcher: MicroBatcher[str, np.ndarray] = MicroBatcher(
            "text", self._run_text, policy.text_max_batch, max_delay_s, max_queue
        )
        self.image_batcher: MicroBatcher[np.ndarray, np.ndarray] = MicroBatcher(
            "image", self._run_image, policy.image_max_batch, max_delay_s, max_queue, policy.ingest_nice
        )
        # image queries: their own batcher and session when given (no ingest batch to queue behind, and threads
        # at the searches' priority), else the ingest one's search lane
        self.image_search_batcher = self.image_batcher
        searchers: list[MicroBatcher[Any, np.ndarray]] = [self.text_batcher]
        if image_search is not None:
            self.image_search_batcher = MicroBatcher(
                "image_search", self._run_image_search, policy.image_max_batch, max_delay_s, max_queue
            )
            searchers.append(self.image_search_batcher)
        self.image_batcher.defer_ingest_to(
            *searchers,
            max_defer_s=policy.ingest_defer_s,
            batch_while_searching=policy.ingest_batch_while_searching,
            recent_search_s=policy.recent_search_s,
        )
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    # Worker-thread side ---------------------------------------------------------------------------------
    def _run_text(self, texts: list[str]) -> list[np.ndarray]:
        ids = self.tokenizer(texts)
        if self.manifest.text_trim:  # the batch's longest text, not all context_length positions
            ids = ids[:, : trimmed_length(ids, self.manifest.context_length)]
        return list(self.text_tower.embed(ids))

    def _run_image(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return list(self.image_tower.embed(frames))

    def _run_image_search(self, frames: list[np.ndarray]) -> list[np.ndarray]:
        return list(cast(Tower, self.image_search_tower).embed(frames))  # its batcher exists only with the tower

    def warm_up(self, autotune: bool = True, reps: int = 3) -> None:
        """Run every bucket size so that no first request pays for allocation or kernel choice.

        With autotune, each bucket is also timed and a tower's max batch becomes the bucket of the best
        throughput: on a CPU that is often a small batch (larger ones only add latency), on a GPU a large one.
        """
        started = time.perf_counter()
        frame = np.zeros((self.image_size, self.image_size, 3), dtype=np.uint8)
        towers: list[tuple[MicroBatcher[Any, np.ndarray], Tower, Callable[[int], object]]] = [
            (self.text_batcher, self.text_tower, lambda n: self._run_text(["a photo of a warm up run"] * n)),
            (self.image_batcher, self.image_tower, lambda n: self._run_image([frame] * n)),
        ]
        for batcher, tower, run in towers:
            rates: dict[int, float] = {}
            for n in buckets(batcher.max_batch):
                if tower.io is not None:
                    tower.warm(n)  # its buffers, and the bucket's CUDA graph where they are captured
                run(n)
                if autotune:
                    # The fastest of a few runs: the least disturbed by whatever else the machine does.
                    times = []
                    for _ in range(reps):
                        t0 = time.perf_counter()
                        run(n)
                        times.append(time.perf_counter() - t0)
                    rates[n] = n / min(times)
            if rates:
                chosen = max(rates, key=lambda n: (rates[n], -n))
                log.info(
                    "%s tower: %s items/s by batch size; max batch %d",
                    batcher.name,
                    {n: round(r, 1) for n, r in rates.items()},
                    chosen,
                )
                batcher.max_batch = chosen
        if self.image_search_batcher is not self.image_batcher:  # the same graph: the ingest one's choice
            self.image_search_batcher.max_batch = self.image_batcher.max_batch
            for n in buckets(self.image_search_batcher.max_batch):
                self._run_image_search([frame] * n)
        log.info(
            "warmed both towers in %.1f s: %s, %s, %s graphs, CUDA graphs %s; buckets text %s, image %s; text ids %s",
            time.perf_counter() - started,
            self.provider,
            self.precision,
            "fused" if self.fused else "unfused",
            "on" if self.cuda_graphs else "off",
            buckets(self.text_max_batch),
            buckets(self.image_max_batch),
            self._text_ids_note(),
        )

    def _text_ids_note(self) -> str:
        if not self.manifest.text_trim:
            return f"all {self.manifest.context_length} positions"
        io = self.text_tower.io
        if io is None:
            return "trimmed to the longest text (rounded up to 8)"
        return f"trimmed, padded up to lengths {io.lengths}"

    # Event-loop side ------------------------------------------------------------------------------------
    @property
    def _batchers(self) -> list[MicroBatcher[Any, np.ndarray]]:
        own_search = self.image_search_batcher is not self.image_batcher
        return [self.text_batcher, self.image_batcher, *([self.image_search_batcher] if own_search else [])]

    def start(self) -> None:
        for b in self._batchers:
            b.start()

    async def stop(self) -> None:
        await asyncio.gather(*(b.stop() for b in self._batchers))

    @staticmethod
    def _collect(results: Sequence[Result[np.ndarray]], dim: int) -> Embedded:
        if not results:
            return Embedded(np.zeros((0, dim), np.float32), 0.0, 0.0)
        return Embedded(
            np.stack([r.value for r in results]),
            max(r.queue_s for r in results),
            max(r.inference_s for r in results),
        )

    async def embed_texts(
        self, texts: Sequence[str], lane: Lane = Lane.SEARCH, deadline: float | None = None
    ) -> Embedded:
        vectors: list[np.ndarray | None] = [self._cache_get(t) for t in texts]
        missing = [i for i, v in enumerate(vectors) if v is None]
        metrics.TEXT_CACHE.labels("hit").inc(len(texts) - len(missing))
        metrics.TEXT_CACHE.labels("miss").inc(len(missing))
        results = await self.text_batcher.submit_many([texts[i] for i in missing], lane, deadline) if missing else []
        for i, r in zip(missing, results, strict=True):
            vectors[i] = r.value
            self._cache_put(texts[i], r.value)
        done = self._collect(results, self.dim)
        stacked = np.stack([v for v in vectors if v is not None]) if texts else done.vectors
        return Embedded(stacked, done.queue_s, done.inference_s)

    async def embed_frames(
        self, frames: Sequence[np.ndarray], lane: Lane = Lane.INGEST, deadline: float | None = None
    ) -> Embedded:
        return self._collect(await self.image_batcher.submit_many(frames, lane, deadline), self.dim)

    async def embed_images(self, images: Sequence[bytes], deadline: float | None = None) -> Embedded:
        """Encoded JPEG/PNG bytes → vectors (search lane). Raises BadImage for undecodable input."""
        frames = [decode_image(data, self.framing) for data in images]
        return self._collect(await self.image_search_batcher.submit_many(frames, Lane.SEARCH, deadline), self.dim)

    @property
    def image_max_batch(self) -> int:
        return self.image_batcher.max_batch

    @property
    def text_max_batch(self) -> int:
        return self.text_batcher.max_batch

    @property
    def precision(self) -> str:
        """The image tower's (the text tower is exported alike)."""
        return self.image_tower.precision

    @property
    def provider(self) -> str:
        return self.image_tower.provider

    @property
    def cuda_graphs(self) -> bool:
        """Whether both towers replay CUDA graphs (a tower whose capture failed serves without)."""
        return self.text_tower.cuda_graphs and self.image_tower.cuda_graphs

    @property
    def fused(self) -> bool:
        """Whether the fused attention graphs serve (config fused_graphs)."""
        return self.image_tower.fused

    async def embed_stream(
        self, frames: AsyncIterator[tuple[K, np.ndarray]], window: int = 0
    ) -> AsyncGenerator[StreamEmbedded[K], None]:
        """Ingest frames in, their embeddings out in the same order, as soon as each is ready.

        `frames` yields (key, uint8 RGB at the model's size); at most `window` (default two batches) are
        in the tower at once: the next frame is only pulled when one comes back, which is the back-pressure
        on the producer. An error of `frames` is raised here after the embeddings before it were yielded;
        closing this iterator drops what is still in flight."""
        window = window or 2 * self.image_batcher.max_batch
        in_flight: deque[tuple[K, asyncio.Future]] = deque()
        getter: asyncio.Future | None = None
        exhausted = False
        try:
            while in_flight or not exhausted:
                if getter is None and not exhausted and len(in_flight) < window:
                    getter = asyncio.ensure_future(frames.__anext__())
                waits: set[asyncio.Future] = {in_flight[0][1]} if in_flight else set()
                if getter is not None:
                    waits.add(getter)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                while in_flight and in_flight[0][1].done():
                    key, fut = in_flight.popleft()
                    r: Result[np.ndarray] = fut.result()
                    yield StreamEmbedded(key, r.value, r.inference_s / r.batch_size)
                if getter is not None and getter.done():
                    done, getter = getter, None
                    try:
                        key, rgb = done.result()
                    except StopAsyncIteration:
                        exhausted = True
                        continue
                    except BaseException:
                        # the frames before the failure first (a live stream commits them), then the error
                        for key, fut in in_flight:
                            r = await fut
                            yield StreamEmbedded(key, r.value, r.inference_s / r.batch_size)
                        in_flight.clear()
                        raise
                    (fut,) = self.image_batcher.submit_nowait([rgb], Lane.INGEST)
                    in_flight.append((key, fut))
        finally:
            if getter is not None:
                getter.cancel()
            for _, fut in in_flight:
                fut.cancel()

    def _cache_get(self, text: str) -> np.ndarray | None:
        vec = self._cache.get(text)
        if vec is not None:
            self._cache.move_to_end(text)
        return vec

    def _cache_put(self, text: str, vec: np.ndarray) -> None:
        if self._cache_size <= 0:
            return
        self._cache[text] = vec
        self._cache.move_to_end(text)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
