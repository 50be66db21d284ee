"""The synchronous Moments client.

>>> from moments_client import Client
>>> with Client("127.0.0.1:50051") as client:
...     done = client.ingest("cam.mp4", video_id="cam-1", metadata={"camera": "north"})
...     for moment in client.search("a red circle", top_k=5):
...         print(moment.video_id, moment.start_s, moment.end_s, moment.score)

Every call has a deadline (``timeout`` seconds, default 30; ingest 3600), idempotent calls (Search, Embed,
GetVideo, ListVideos, Info) are retried by the channel on UNAVAILABLE with backoff, and every failure is
raised as :class:`MomentsError` with the gRPC status code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import grpc

from moments_client import _calls as calls
from moments_client import _common as c
from moments_client._streams import Blocking, Stream
from moments_client._streams import ProgressCallback as ProgressCallback  # importable from here, as before
from moments_client.errors import MomentsError
from moments_client.types import IngestDone, IngestEvent, Video

__all__ = ["Client"]

P = ParamSpec("P")
T = TypeVar("T")


def _unary(spec: Callable[P, calls.Unary[T]]) -> Callable[Concatenate[Client, P], T]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(spec(*args, **kwargs))

    return c.method_of(spec, method, spec.__annotations__["return"].removeprefix("Unary[")[:-1])


def _events(spec: Callable[P, Stream]) -> Callable[Concatenate[Client, P], Generator[IngestEvent, None, None]]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> Generator[IngestEvent, None, None]:
        return self._stream(spec(*args, **kwargs))

    return c.method_of(spec, method, "Iterator[IngestEvent]")


def _blocking(spec: Callable[P, Blocking]) -> Callable[Concatenate[Client, P], IngestDone]:
    def method(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> IngestDone:
        return self._drain(spec(*args, **kwargs))

    return c.method_of(spec, method, "IngestDone")


class Client(c.ClientBase):
    """A connection to a Moments server (thread-safe; share one per process).

    ``target`` is ``host:port``, or several (``host1:port1,host2:port2``: calls are balanced over them
    round-robin; ``dns:///name:port`` balances over the addresses DNS gives); ``token`` is sent as
    ``authorization: Bearer <token>``; ``tls`` is None
    (plaintext), True (system roots), a CA bundle path, or :class:`grpc.ChannelCredentials`;
    ``client_cert`` is (certificate PEM path, key PEM path) for servers that require client certificates.
    """

    _channel: grpc.Channel

    def _open_channel(
        self, target: str, creds: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]
    ) -> grpc.Channel:
        return (
            grpc.secure_channel(target, creds, options=options)
            if creds
            else grpc.insecure_channel(target, options=options)
        )

    # ---------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects; MomentsError(UNAVAILABLE) if it does not in time."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise MomentsError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {self.target} within {timeout} s"
            ) from None

    def _call(self, call: calls.Unary[T]) -> T:
        fn = getattr(self._stub, call.method)
        timeout = self.timeout if call.timeout is None else call.timeout
        try:
            return call.read(fn(call.request, timeout=timeout, metadata=self._metadata))
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, call.method) from None

    def _stream(self, stream: Stream) -> Generator[IngestEvent, None, None]:
        header = stream.open(aio=False)
        try:
            while True:  # more than once only for a LIVE upload resuming after a broken link
                call = self._stub.Ingest(
                    stream.requests(header), timeout=stream.deadline(self.ingest_timeout), metadata=self._metadata
                )
                try:
                    for message in call:
                        event = stream.event(message)
                        if event is not None:
                            yield event
                    return
                except grpc.RpcError as e:
                    wait = stream.retry_after(e)
                    if wait is None:
                        raise stream.error(e) from None
                finally:
                    call.cancel()  # a no-op after the call ended; cancels the upload when the caller stopped early
                time.sleep(wait)
                header = stream.resumed_header()
        finally:
            stream.close()

    def _drain(self, blocking: Blocking) -> IngestDone:
        done: IngestDone | None = None
        for event in self._stream(blocking.stream):
            done = blocking.seen(event, done)
        return blocking.result(done)

    # ---------------------------------------------------------------------------------------- calls
    # Each call's parameters, documentation, request and reading of the answer: moments_client._calls.

    search = _unary(calls.search)
    embed = _unary(calls.embed)
    get_video = _unary(calls.get_video)
    list_videos_page = _unary(calls.list_videos_page)
    delete_video = _unary(calls.delete_video)
    info = _unary(calls.info)
    stop_ingest = _unary(calls.stop_ingest)

    def list_videos(self, page_size: int = 100, *, timeout: float | None = None) -> Iterator[Video]:
        """Every stored video in ingest order, fetching pages of ``page_size`` as the iteration goes."""
        token: str | None = None
        while True:
            page = self.list_videos_page(page_size, token, timeout=timeout)
            yield from page.videos
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
