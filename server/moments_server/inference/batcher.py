"""Micro-batcher: gathers requests into one session call, search lane before ingest lane.

A batch closes when it is full (`max_batch`) or `max_delay` after its oldest request arrived; requests
that piled up while the previous batch ran therefore go at once. The delay is only spent when company is
likely: when the last two requests arrived less than `max_delay` apart. A lone caller (its requests a
whole round trip apart) goes straight to the tower: waiting for nobody measured ~0.7 ms of its 1.2 ms
queue time (shapes-demo, 2 cores). The session runs on one dedicated
thread per tower (one batch at a time: the session already uses every core it was given), so the event
loop never blocks. Cancelled or expired requests are dropped before they cost inference.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Generic, TypeVar

from moments_server import metrics
from moments_server.errors import Expired, QueueFull
from moments_server.inference.priority import lower_this_thread

T = TypeVar("T")
R = TypeVar("R")


class Lane(IntEnum):
    SEARCH = 0
    INGEST = 1


@dataclass
class Result(Generic[R]):
    value: R
    queue_s: float
    inference_s: float
    batch_size: int


@dataclass
class _Request(Generic[T]):
    value: T
    lane: Lane
    future: asyncio.Future[Result]
    enqueued: float
    deadline: float | None = None
    dropped: bool = field(default=False)


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        name: str,
        run: Callable[[list[T]], Sequence[R]],
        max_batch: int,
        max_delay_s: float,
        max_queue: int,
        nice: int = 0,
    ) -> None:
        """nice > 0: the thread that runs batches has a lower OS priority (priority.py)."""
        self.name = name
        self._run = run
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.max_queue = max_queue
        self._lanes: tuple[deque[_Request[T]], deque[_Request[T]]] = (deque(), deque())
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"batch-{name}", initializer=lower_this_thread, initargs=(nice,)
        )
        self._task: asyncio.Task[None] | None = None
        # Search requests queued or running here; other towers' ingest batches wait while it is > 0.
        self._searching = 0
        self._search_idle = asyncio.Event()
        self._search_idle.set()
        self._defer_to: list[MicroBatcher[Any, Any]] = []
        # Set by defer_ingest_to from the serving policy (inference/policy.py; config.py: ingest_defer_s,
        # ingest_batch_while_searching, recent_search_s); these defaults are the CPU's.
        # While another tower has served searches within `recent_search_s`, ingest batches here hold at most
        # ingest_batch_while_searching items: a batch already running cannot be stopped, so its length bounds
        # a query's wait.
        self.max_defer_s = 0.5
        self.ingest_batch_while_searching = 2
        self.recent_search_s = 2.0
        self._last_search = -1e9
        self._last_arrival = -1e9
        self._arrival_gap = float("inf")  # between the last two submissions

    # -- public -------------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        for lane in self._lanes:
            while lane:
                req = lane.popleft()
                if not req.future.done():
                    req.future.set_exception(asyncio.CancelledError())
        self._executor.shutdown(wait=True)

    def defer_ingest_to(
        self,
        *others: MicroBatcher[Any, Any],
        max_defer_s: float | None = None,
        batch_while_searching: int | None = None,
        recent_search_s: float | None = None,
    ) -> None:
        """Ingest-only batches here wait (up to max_defer_s; 0 = never) while `others` have search work, and
        hold at most batch_while_searching items while those searched within recent_search_s.

        On a CPU the towers share the cores: an image batch of a backfill running beside a text query slows
        the query as much as a queue would. Waiting is bounded so that ingest still progresses under a
        steady search load. On CUDA ingest does not wait (it starved on the card); the bound on its batch
        bounds a query's wait behind it (inference/policy.py).
        """
        self._defer_to = list(others)
        if max_defer_s is not None:
            self.max_defer_s = max_defer_s
        if batch_while_searching is not None:
            self.ingest_batch_while_searching = batch_while_searching
        if recent_search_s is not None:
            for other in others:
                other.recent_search_s = recent_search_s
            self.recent_search_s = recent_search_s

    @property
    def searching(self) -> bool:
        return self._searching > 0

    def searched_within(self, seconds: float, now: float) -> bool:
        """Search work is here now, or finished less than `seconds` before `now` (perf_counter)."""
        return self.searching or now - self._last_search < seconds

    async def search_idle(self) -> None:
        """Returns once no search request is queued or running here."""
        await self._search_idle.wait()

    def _search_done(self, _: asyncio.Future[Any]) -> None:
        self._last_search = time.perf_counter()
        self._searching -= 1
        if self._searching == 0:
            self._search_idle.set()

    def _ingest_limit(self) -> int:
        now = time.perf_counter()
        if any(b.searched_within(b.recent_search_s, now) for b in self._defer_to):
            return min(self.max_batch, self.ingest_batch_while_searching)
        return self.max_batch

    async def _yield_to_searches(self) -> None:
        if self.max_defer_s <= 0:  # ingest never waits (the CUDA policy): its batches are only bounded
            return
        busy = [b for b in self._defer_to if b.searching]
        if not busy or self._lanes[Lane.SEARCH]:
            return
        waits = [asyncio.ensure_future(b.search_idle()) for b in busy]
        try:
            await asyncio.wait(waits, timeout=self.max_defer_s, return_when=asyncio.ALL_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    @property
    def pending(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    def submit_nowait(self, values: Sequence[T], lane: Lane, deadline: float | None = None) -> list[asyncio.Future]:
        """Queue requests and return their futures; raises QueueFull when they do not fit."""
        if self.pending + len(values) > self.max_queue:
            metrics.DROPPED.labels(self.name, "queue_full").inc(len(values))
            raise QueueFull(
                f"the {self.name} tower's queue is full ({self.pending} waiting, bound {self.max_queue}); retry later"
            )
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        self._arrival_gap, self._last_arrival = now - self._last_arrival, now
        futures = []
        for value in values:
            fut: asyncio.Future[Result] = loop.create_future()
            self._lanes[lane].append(_Request(value, lane, fut, now, deadline))
            futures.append(fut)
            if lane == Lane.SEARCH:
                self._searching += 1
                self._search_idle.clear()
                fut.add_done_callback(self._search_done)
        self._wakeup.set()
        return futures

    async def submit(self, value: T, lane: Lane = Lane.SEARCH, deadline: float | None = None) -> Result[R]:
        (fut,) = self.submit_nowait([value], lane, deadline)
        return await fut

    async def submit_many(
        self, values: Sequence[T], lane: Lane = Lane.SEARCH, deadline: float | None = None
    ) -> list[Result[R]]:
        futures = self.submit_nowait(values, lane, deadline)
        try:
            return list(await asyncio.gather(*futures))
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    # -- worker -------------------------------------------------------------------------------------------
    def _oldest(self) -> float | None:
        heads = [lane[0].enqueued for lane in self._lanes if lane]
        return min(heads) if heads else None

    def _take(self) -> list[_Request[T]]:
        """Up to max_batch live requests, search lane first (ingest ones capped while searches are about);
        drops cancelled and expired ones."""
        batch: list[_Request[T]] = []
        now = time.perf_counter()
        for lane, limit in (
            (self._lanes[Lane.SEARCH], self.max_batch),
            (self._lanes[Lane.INGEST], self._ingest_limit()),
        ):
            while lane and len(batch) < limit:
                req = lane.popleft()
                if req.future.done():  # cancelled by its caller
                    metrics.DROPPED.labels(self.name, "cancelled").inc()
                    continue
                if req.deadline is not None and now > req.deadline:
                    metrics.DROPPED.labels(self.name, "expired").inc()
                    req.future.set_exception(Expired(f"deadline passed while queued for the {self.name} tower"))
                    continue
                batch.append(req)
        return batch

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.pending:
                await self._wakeup.wait()
            oldest = self._oldest()
            if self._arrival_gap >= self.max_delay_s:
                oldest = None  # no company in sight: run now
            while oldest is not None and self.pending < self.max_batch:
                remaining = oldest + self.max_delay_s - time.perf_counter()
                if remaining <= 0:
                    break
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), remaining)
                except TimeoutError:
                    break
            await self._yield_to_searches()
            batch = self._take()
            if not self.pending:
                self._wakeup.clear()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, [r.value for r in batch])
            except Exception as e:  # a failed batch fails its callers, not the batcher
                for req in batch:
                    if not req.future.done():
                        req.future.set_exception(e)
                continue
            finished = time.perf_counter()
            inference_s = finished - started
            metrics.INFERENCE_TIME.labels(self.name).observe(inference_s)
            sizes = {Lane.SEARCH: 0, Lane.INGEST: 0}
            for req, out in zip(batch, outputs, strict=True):
                sizes[req.lane] += 1
                queue_s = started - req.enqueued
                metrics.QUEUE_TIME.labels(self.name, req.lane.name.lower()).observe(queue_s)
                if not req.future.done():
                    req.future.set_result(Result(out, queue_s, inference_s, len(batch)))
            for lane_id, n in sizes.items():
                if n:
                    metrics.BATCH_SIZE.labels(self.name, lane_id.name.lower()).observe(n)
