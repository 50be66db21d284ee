"""The asyncio Moments client (grpc.aio): the same methods as :class:`moments_client.Client`, awaitable.

>>> async with AsyncClient("127.0.0.1:50051") as client:
...     result = await client.search("a red circle")
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from moments_client import _calls as calls
from moments_client import _common as c
from moments_client._streams import Blocking, Stream
from moments_client.errors import MomentsError
from moments_client.types import IngestDone, IngestEvent, Video

__all__ = ["AsyncClient"]

P = ParamSpec("P")
T = TypeVar("T")


def _unary(spec: Callable[P, calls.Unary[T]]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._call(spec(*args, **kwargs))

    return c.method_of(spec, method, spec.__annotations__["return"].removeprefix("Unary[")[:-1])


def _events(spec: Callable[P, Stream]) -> Callable[Concatenate[AsyncClient, P], AsyncGenerator[IngestEvent, None]]:
    def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> AsyncGenerator[IngestEvent, None]:
        return self._stream(spec(*args, **kwargs))

    return c.method_of(spec, method, "AsyncIterator[IngestEvent]")


def _blocking(spec: Callable[P, Blocking]) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, IngestDone]]:
    async def method(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> IngestDone:
        return await self._drain(spec(*args, **kwargs))

    return c.method_of(spec, method, "IngestDone")


class AsyncClient(c.ClientBase):
    """A grpc.aio connection to a Moments server; create and use it inside one event loop."""

    _channel: grpc.aio.Channel

    def _open_channel(
        self, target: str, creds: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.aio.Channel:
        return (
            grpc.aio.secure_channel(target, creds, options=options)
            if creds
            else grpc.aio.insecure_channel(target, options=options)
        )

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise MomentsError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {self.target} within {timeout} s"
            ) from None

    async def _call(self, call: calls.Unary[T]) -> T:
        fn = getattr(self._stub, call.method)
        timeout = self.timeout if call.timeout is None else call.timeout
        try:
            return call.read(await fn(call.request, timeout=timeout, metadata=self._metadata))
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, call.method) from None

    async def _stream(self, stream: Stream) -> AsyncGenerator[IngestEvent, None]:
        header = await asyncio.to_thread(stream.open, True)  # opens and may hash a file: not in the event loop
        try:
            while True:  # more than once only for a LIVE upload resuming after a broken link
                call = self._stub.Ingest(
                    stream.arequests(header), timeout=stream.deadline(self.ingest_timeout), metadata=self._metadata
                )
                try:
                    async for message in call:
                        event = stream.event(message)
                        if event is not None:
                            yield event
                    return
                except grpc.RpcError as e:
                    wait = stream.retry_after(e)
                    if wait is None:
                        raise stream.error(e) from None
                finally:
                    call.cancel()
                await asyncio.sleep(wait)
                header = stream.resumed_header()
        finally:
            stream.close()

    async def _drain(self, blocking: Blocking) -> IngestDone:
        done: IngestDone | None = None
        async for event in self._stream(blocking.stream):
            done = blocking.seen(event, done)
        return blocking.result(done)

    # ---------------------------------------------------------------------------------------- calls
    # The same calls as Client's, awaitable (their parameters, documentation and requests: moments_client._calls).

    search = _unary(calls.search)
    embed = _unary(calls.embed)
    get_video = _unary(calls.get_video)
    list_videos_page = _unary(calls.list_videos_page)
    delete_video = _unary(calls.delete_video)
    info = _unary(calls.info)
    stop_ingest = _unary(calls.stop_ingest)

    async def list_videos(self, page_size: int = 100, *, timeout: float | None = None) -> AsyncIterator[Video]:
        """Every stored video in ingest order, fetching pages of ``page_size`` as the iteration goes."""
        token: str | None = None
        while True:
            page = await self.list_videos_page(page_size, token, timeout=timeout)
            for video in page.videos:
                yield video
            if not page.next_page_token:
                return
            token = page.next_page_token

    # ---------------------------------------------------------------------------------------- ingest

    ingest_events = _events(calls.ingest_events)
    ingest = _blocking(calls.ingest)
    ingest_frames_events = _events(calls.ingest_frames_events)
    ingest_frames = _blocking(calls.ingest_frames)
    ingest_url_events = _events(calls.ingest_url_events)
    ingest_url = _blocking(calls.ingest_url)
