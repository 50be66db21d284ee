"""Health follows a remote store: when ApertureDB stops answering, gRPC health turns NOT_SERVING (load
balancers and orchestrators route around the replica); when it answers again, SERVING. Calls made
meanwhile fail with UNAVAILABLE (StoreUnavailable), and the SDK connector reconnects by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor

from moments_server.store.connector import Connector

log = logging.getLogger(__name__)


class StoreWatch:
    """Probes the store every every_s (GetStatus, given timeout_s to answer): Settings.store_probe_every_s and
    store_probe_timeout_s."""

    def __init__(
        self,
        connector: Connector,
        executor: Executor,
        set_serving: Callable[[bool], Awaitable[None]],
        every_s: float,
        timeout_s: float,
    ) -> None:
        self.connector = connector
        self.executor = executor
        self.set_serving = set_serving
        self.every_s = every_s
        self.timeout_s = timeout_s
        self.serving = True
        self._task: asyncio.Task[None] | None = None

    async def probe(self) -> str | None:
        """None when the store answers GetStatus, else why not."""
        loop = asyncio.get_running_loop()
        try:
            response, _ = await asyncio.wait_for(
                loop.run_in_executor(self.executor, self.connector.query, [{"GetStatus": {}}]), self.timeout_s
            )
        except Exception as e:  # whatever the SDK raises for a store it cannot reach
            return f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        if not isinstance(response, list):
            return f"GetStatus answered {response!r}"
        return None

    async def _run(self) -> None:
        while True:
            why = await self.probe()
            if why is None and not self.serving:
                log.warning("the store answers again: health SERVING")
            elif why is not None and self.serving:
                log.error("the store does not answer (%s): health NOT_SERVING until it does", why)
            if (why is None) != self.serving:
                self.serving = why is None
                await self.set_serving(self.serving)
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="store-watch")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
