"""Ingest: the gate every stream passes (checks, a slot, one stream per video), then the UPLOAD, LIVE, FRAMES
or pull path; StopIngest; and the housekeeping of streams that can no longer be resumed."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import TypeVar, cast

from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import PropertyValue, VideoRecord
from moments_server.config import Settings
from moments_server.errors import AlreadyExists, FailedPrecondition, NotFound, Overloaded, Unavailable
from moments_server.inference.embedder import Embedder
from moments_server.inference.priority import lower_this_thread
from moments_server.service.events import Emit, IngestEvent
from moments_server.service.ingest_checks import validate_header
from moments_server.service.live import LiveIngest
from moments_server.service.pull import Pull
from moments_server.service.requests import FrameIn, IngestMode, IngestSpec
from moments_server.service.upload import UploadIngest
from moments_server.service.values import metadata_from_request
from moments_server.video.pull import redacted
from moments_server.video.spool import sweep

log = logging.getLogger(__name__)

T = TypeVar("T")
Metadata = dict[str, PropertyValue]


async def _until(chunks: AsyncIterator[T], stopped: asyncio.Event) -> AsyncIterator[T]:
    """The caller's chunks (or frames) until StopIngest: then the stream ends as if the caller had closed it."""
    it = chunks.__aiter__()
    stop_wait: asyncio.Future[object] = asyncio.ensure_future(stopped.wait())
    pending: list[asyncio.Future[object]] = []  # the read in flight
    try:
        while True:
            nxt: asyncio.Future[object] = asyncio.ensure_future(it.__anext__())
            pending[:] = [nxt]
            await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                return
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                return
            yield cast(T, chunk)
    finally:
        stop_wait.cancel()
        for read in pending:
            if not read.done():
                read.cancel()
            elif not read.cancelled():
                read.exception()  # retrieved: a broken stream's error is the caller's to hear, not asyncio's log


class IngestService:
    def __init__(self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor
        # Upload decoders wait on the embedder for a video's whole decode: on threads of their own (a decoder on
        # a store thread held it, so max_concurrent_ingests uploads could take every store thread and stall
        # every search's store query until a decode ended), at ingest's lower priority (inference/priority.py).
        self._decoders = ThreadPoolExecutor(
            max_workers=settings.max_concurrent_ingests,
            thread_name_prefix="decode",
            initializer=lower_this_thread,
            initargs=(embedder.policy.ingest_nice,),
        )
        self._in_flight: dict[str, asyncio.Task] = {}  # video id -> the call ingesting it
        self._stops: dict[asyncio.Task, Callable[[], None]] = {}  # a LIVE call -> what ends its stream cleanly
        self._pulls: set[asyncio.Task] = set()  # the pulls' LIVE ingests, cancelled (interrupted) on shutdown
        self._closing = False
        self._slots = asyncio.Semaphore(settings.max_concurrent_ingests)
        # Uploads of a server killed mid-ingest are never finished: clear them before taking new ones.
        sweep(settings.spool_dir)

    # -- housekeeping ---------------------------------------------------------------------------------------
    @property
    def housekeeping_every_s(self) -> float:
        return min(60.0, max(0.2, self.settings.upload_ttl_s / 4))

    async def expire_idle_uploads(self) -> int:
        """Streams (LIVE, FRAMES) with no commit for upload_ttl_s can no longer be resumed: their video becomes
        "interrupted" and their resume state is dropped (Catalog.expire_upload). Streams running in this process
        are left alone. Returns how many expired."""
        loop = asyncio.get_running_loop()
        cutoff = time.time() - self.settings.upload_ttl_s
        idle = await loop.run_in_executor(self.executor, self.catalog.idle_uploads, cutoff)
        expired = 0
        for video in idle:
            if video.video_id in self._in_flight:
                continue
            if await loop.run_in_executor(self.executor, self.catalog.expire_upload, video):
                expired += 1
                log.info(
                    "upload %s of video %s expired (%s, idle for %.0f s)",
                    video.upload_id,
                    video.video_id,
                    video.state,
                    time.time() - video.active_at,
                )
        # spool files of servers that are gone (a killed worker's); this process's own are in use
        await loop.run_in_executor(self.executor, lambda: sweep(self.settings.spool_dir, at_start=False))
        return expired

    async def housekeeping(self) -> None:
        """Runs until cancelled: expire_idle_uploads every housekeeping_every_s."""
        while True:
            await asyncio.sleep(self.housekeeping_every_s)
            try:
                await self.expire_idle_uploads()
            except Exception:  # a store that is away now is tried again next round
                log.exception("housekeeping failed")

    async def ingest(self, header: IngestSpec, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        """An UPLOAD or LIVE ingest: the video's bytes follow the header."""
        await self._gated(header, lambda metadata: self._ingest(header, metadata, chunks, emit))

    async def ingest_frames(self, header: IngestSpec, frames: AsyncIterator[FrameIn], emit: Emit) -> None:
        """A FRAMES ingest: the sender's pictures follow the header."""
        live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor)

        async def run(metadata: Metadata) -> None:
            stopped = asyncio.Event()
            self._stops[cast(asyncio.Task, asyncio.current_task())] = stopped.set
            await live.run_frames(header, metadata, _until(frames, stopped), emit)

        await self._gated(header, run)

    async def _gated(self, header: IngestSpec, run: Callable[[Metadata], Awaitable[None]]) -> None:
        """Checks, then `run(metadata)` in a slot, as the one stream of its video."""
        validate_header(header, self.settings)
        metadata = metadata_from_request(header.metadata, self.settings)
        if self._slots.locked():
            raise Overloaded(f"{self.settings.max_concurrent_ingests} ingests are running; retry when one finishes")
        running = self._in_flight.get(header.video_id)
        if running is not None and header.resume_upload_id:
            # A resume supersedes the stream it continues: after a dropped link the old call may linger
            # until keepalive notices; it is ended here (what it committed stays) before this one starts.
            running.cancel()
            await asyncio.wait({running}, timeout=self.settings.grace_s)
        elif running is not None:
            raise AlreadyExists(f"video {header.video_id!r} is being ingested by another stream right now")
        if header.video_id in self._in_flight:
            raise AlreadyExists(f"video {header.video_id!r} is still being ingested by another stream; retry")
        task = asyncio.current_task()
        assert task is not None
        async with self._slots:
            self._in_flight[header.video_id] = task
            try:
                await run(metadata)
            finally:
                self._stops.pop(task, None)
                if self._in_flight.get(header.video_id) is task:
                    del self._in_flight[header.video_id]

    async def stop(self, video_id: str) -> VideoRecord | None:
        """End a running LIVE ingest (a pull or a caller's stream) cleanly; -> the video once it has ended."""
        task = self._in_flight.get(video_id)
        if task is None:
            raise NotFound(f"no ingest of video {video_id!r} is running on this server")
        stop = self._stops.get(task)
        if stop is None:
            raise FailedPrecondition(
                f"video {video_id!r} is being uploaded (all or nothing): cancel its Ingest call to abandon it"
            )
        stop()
        await asyncio.wait({task}, timeout=self.settings.pull_timeout_s + self.settings.grace_s)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.catalog.get_video, video_id)

    async def close(self) -> None:
        """Server shutdown: running pulls end "interrupted" (their sources did not end)."""
        self._closing = True
        for job in self._pulls:
            job.cancel()
        if self._pulls:
            await asyncio.wait(set(self._pulls), timeout=self.settings.grace_s)
        self._decoders.shutdown(wait=False, cancel_futures=True)

    async def _ingest(self, header: IngestSpec, metadata: Metadata, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        if header.source_url:
            await self._pull(header, metadata, emit)
            return
        if header.mode is IngestMode.LIVE:
            live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor)
            stopped = asyncio.Event()
            self._stops[cast(asyncio.Task, asyncio.current_task())] = stopped.set
            await live.run(header, metadata, _until(chunks, stopped), emit)
            return
        upload = UploadIngest(self.settings, self.embedder, self.catalog, self.executor, self._decoders)
        await upload.run(header, metadata, chunks, emit)

    async def _pull(self, header: IngestSpec, metadata: Metadata, emit: Emit) -> None:
        """A LIVE ingest of what the server reads from header.source_url. It runs as a task of its own so
        that a caller who cancels the call ends it cleanly (like StopIngest: "complete") rather than
        breaking it, while a server shutdown cancels it ("interrupted")."""
        live_header = dataclasses.replace(
            header, mode=IngestMode.LIVE, filename=header.filename or redacted(header.source_url)
        )
        caller_gone = False

        async def relay(event: IngestEvent) -> None:
            if not caller_gone:
                await emit(event)

        pull = Pull(header.source_url, self.settings, relay)
        self._stops[cast(asyncio.Task, asyncio.current_task())] = pull.stop
        live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor)
        job = asyncio.ensure_future(live.run(live_header, metadata, pull.chunks(), relay))
        job.add_done_callback(lambda t: t.cancelled() or t.exception())  # its error is read below, or logged
        self._pulls.add(job)
        try:
            await asyncio.shield(job)
        except asyncio.CancelledError:
            if job.cancelled() and self._closing:
                raise Unavailable(
                    f"the server is shutting down: the pull of {redacted(header.source_url)} stopped and video "
                    f"{header.video_id!r} is interrupted; pull it again from another server (replace=true)"
                ) from None
            if not job.done():  # the caller left: the pull ends as if stopped
                caller_gone = True
                pull.stop()
                await asyncio.wait({job}, timeout=self.settings.pull_timeout_s + self.settings.grace_s)
                job.cancel()
            raise
        finally:
            pull.stop()
            self._pulls.discard(job)
