"""PULL ingest: the server reads a network stream (IngestHeader.source_url) and ingests it as a LIVE stream.

A thread of its own per pull (video/pull.py: connect, remux to MPEG-TS, reconnect) hands bytes over a
bounded queue to the LIVE ingest's chunk iterator: when decoding falls behind, the thread waits, which
holds back the reading of the source (a live source then drops what it cannot buffer; a VOD playlist is
simply read slower).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from moments_server.config import Settings
from moments_server.errors import InvalidArgument, Unavailable
from moments_server.service.events import Emit, PullState
from moments_server.video.pull import PROTOCOLS, NoVideo, Puller, PullStatus, SourceError, Stopped, redacted

_END = object()
MAX_URL_CHARS = 4096


def check_source_url(url: str) -> None:
    """Only network sources: a caller must never make the server read its own files."""
    if len(url) > MAX_URL_CHARS:
        raise InvalidArgument(f"source_url is {len(url)} characters; at most {MAX_URL_CHARS}")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in PROTOCOLS:
        raise InvalidArgument(
            f"source_url scheme {scheme or '(none)'!r} is not pulled: use rtsp://, rtsps://, http(s):// "
            "(an HLS playlist or a stream) or udp:// (MPEG-TS); the server never reads local files"
        )
    if not parts.hostname and scheme != "udp":
        raise InvalidArgument(f"source_url {redacted(url)!r} names no host")


class Pull:
    """One pull: `chunks()` is the LIVE ingest's byte iterator; `stop()` ends it cleanly (from any task)."""

    def __init__(self, url: str, settings: Settings, emit: Emit) -> None:
        self.url = url
        self.settings = settings
        self.emit = emit
        self._stop = threading.Event()
        self._puller: Puller | None = None

    def stop(self) -> None:
        self._stop.set()
        if self._puller is not None:
            self._puller.stop.set()

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=16)
        stop = self._stop
        gone = threading.Event()  # nobody reads the queue any more

        def put(item: object) -> None:  # from the pull's thread; waits while the queue is full
            future = asyncio.run_coroutine_threadsafe(queue.put(item), loop)
            while True:
                try:
                    future.result(timeout=0.25)
                    return
                except concurrent.futures.TimeoutError:
                    if gone.is_set():
                        future.cancel()
                        raise Stopped() from None

        def on_status(status: PullStatus) -> None:
            if not stop.is_set():
                put(PullStatus(status.media_s, status.reconnects, status.error, status.retry_in_s))

        s = self.settings
        puller = Puller(
            self.url,
            put,
            on_status,
            retries=s.pull_retries,
            backoff_s=s.pull_backoff_s,
            backoff_max_s=s.pull_backoff_max_s,
            timeout_s=s.pull_timeout_s,
        )
        puller.stop = stop  # one flag for the job and the thread
        self._puller = puller

        def run() -> None:
            try:
                puller.run()
                put(_END)
            except Stopped:
                pass
            except BaseException as e:
                with contextlib.suppress(Stopped):
                    put(e)

        thread = threading.Thread(target=run, name=f"pull {redacted(self.url)}", daemon=True)
        thread.start()
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, PullStatus):
                    await self.emit(PullState(item.media_s, item.reconnects, item.error, item.retry_in_s))
                    continue
                if isinstance(item, SourceError):
                    raise Unavailable(str(item))
                if isinstance(item, NoVideo):
                    raise InvalidArgument(str(item))
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item
        finally:
            stop.set()
            gone.set()
            while thread.is_alive():  # let the thread finish (its next packet, or its read timeout)
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(0.02)
