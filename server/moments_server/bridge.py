"""A blocking iterator (a decoder) run in a worker thread, read as an async iterator on the event loop.

The thread hands items over through a bounded queue: when the loop side does not keep up, the thread
waits, which is the back-pressure on the decoder. `aclose()` stops it: the thread is told to stop, the
queue is drained until the thread has returned. A thread blocked inside the iterator itself (a decoder
waiting for bytes) must be woken by its caller first (GrowingSource.abort).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from typing import Generic, TypeVar

T = TypeVar("T")


class ThreadIterator(Generic[T]):
    def __init__(
        self, executor: Executor, produce: Callable[[Callable[[], bool]], Iterator[T]], maxsize: int = 64
    ) -> None:
        """`produce(should_stop)` makes the blocking iterator; it runs in `executor` from the first read."""
        self._executor = executor
        self._produce = produce
        self._queue: asyncio.Queue[tuple[bool, object]] = asyncio.Queue(maxsize)
        self._stop = threading.Event()
        self._task: asyncio.Future[None] | None = None
        self._ended = False

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        def put(item: tuple[bool, object]) -> None:
            asyncio.run_coroutine_threadsafe(self._queue.put(item), loop).result()

        try:
            for item in self._produce(self._stop.is_set):
                if self._stop.is_set():
                    return
                put((True, item))
            put((False, None))
        except BaseException as e:
            if not self._stop.is_set():
                put((False, e))

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        if self._ended:
            raise StopAsyncIteration
        if self._task is None:
            loop = asyncio.get_running_loop()
            self._task = loop.run_in_executor(self._executor, self._run, loop)
        more, item = await self._queue.get()
        if more:
            return item  # type: ignore[return-value]
        self._ended = True
        if isinstance(item, BaseException):
            raise item
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._ended = True
        self._stop.set()
        while self._task is not None and not self._task.done():
            while not self._queue.empty():
                self._queue.get_nowait()
            await asyncio.sleep(0.005)
