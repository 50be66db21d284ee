"""Ingest: spool the streamed upload, decode and sample it in a thread, embed frames through the ingest
lane, then write the video, its clips and frame descriptors in one store transaction.

Nothing is written before the last step, so a failed, cancelled or disconnected ingest leaves nothing
visible, and a replace swaps the old video for the new one atomically.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import TypeVar, cast

import numpy as np
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments_server import metrics
from moments_server.bridge import ThreadIterator
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import VIDEO_ID, FrameRecord, VideoRecord
from moments_server.config import Settings
from moments_server.errors import (
    AlreadyExists,
    DataLoss,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Overloaded,
    ResourceExhausted,
    Unavailable,
)
from moments_server.inference.embedder import Embedder
from moments_server.service.live import LiveIngest
from moments_server.service.pull import Pull, check_source_url
from moments_server.service.values import metadata_from_request
from moments_server.service.videos import video_message
from moments_server.store.embedded.blobs import FileBlob
from moments_server.video.decode import DecodeStats, SampledFrame, VideoInfo, probe, sample
from moments_server.video.pull import redacted
from moments_server.video.shots import ShotDetector
from moments_server.video.spool import Spool, UploadTooLarge, sweep

log = logging.getLogger(__name__)

Emit = Callable[[pb.IngestEvent], Awaitable[None]]
T = TypeVar("T")
# Frames are scaled to the model's size by their shorter side: a 2 x 4,000,000 video would scale to gigabytes.
MAX_VIDEO_ASPECT = 8


def validate_header(header: pb.IngestHeader, settings: Settings) -> None:
    if not VIDEO_ID.match(header.video_id):
        raise InvalidArgument("header.video_id must be 1-128 characters of [A-Za-z0-9._:-]")
    fps = header.sampling.fps
    if not math.isfinite(fps) or fps < 0 or fps > settings.max_fps:
        raise InvalidArgument(f"sampling.fps must be in (0, {settings.max_fps}]; 0 means 1; got {fps}")
    if header.sampling.max_frames > settings.max_frames:
        raise InvalidArgument(f"sampling.max_frames must be at most {settings.max_frames}")
    windows = header.sampling.windows
    if windows not in (pb.WINDOWS_UNSPECIFIED, pb.WINDOWS_FIXED, pb.WINDOWS_SHOTS):
        raise InvalidArgument(f"sampling.windows {windows} is unknown: UNSPECIFIED (0), FIXED (1) or SHOTS (2)")
    if windows == pb.WINDOWS_SHOTS and header.sampling.keyframes:
        raise InvalidArgument("sampling.windows SHOTS detects shots on the decoded frames: it needs keyframes = false")
    if windows == pb.WINDOWS_SHOTS and (header.mode != pb.INGEST_MODE_UNSPECIFIED or header.source_url):
        raise InvalidArgument(
            "sampling.windows SHOTS is for uploads; LIVE, FRAMES and pulled streams keep fixed windows: leave it unset"
        )
    if header.sha256 and (len(header.sha256) != 64 or any(c not in "0123456789abcdef" for c in header.sha256)):
        raise InvalidArgument("header.sha256 must be 64 lowercase hex characters")
    if header.mode not in (pb.INGEST_MODE_UNSPECIFIED, pb.INGEST_MODE_LIVE, pb.INGEST_MODE_FRAMES):
        raise InvalidArgument(f"header.mode {header.mode} is unknown: UPLOAD (0), LIVE (1) or FRAMES (2)")
    if header.mode == pb.INGEST_MODE_FRAMES and (
        header.sampling.fps or header.sampling.max_frames or header.sampling.keyframes or header.sampling.windows
    ):
        raise InvalidArgument("a FRAMES stream keeps every frame sent (the sender samples): leave sampling unset")
    if header.source_url:
        check_source_url(header.source_url)
        if header.mode not in (pb.INGEST_MODE_UNSPECIFIED, pb.INGEST_MODE_LIVE):
            raise InvalidArgument("source_url pulls a LIVE stream: leave mode UNSPECIFIED or LIVE")
        if header.resume_upload_id:
            raise InvalidArgument("a pull does not resume an upload: pull again (replace=true overwrites the video)")
        if header.size_bytes:
            raise InvalidArgument("size_bytes is for uploads; a pull has none: leave it 0")
    if header.mode in (pb.INGEST_MODE_LIVE, pb.INGEST_MODE_FRAMES) or header.source_url:
        seg = header.segment_s
        if seg and not settings.live_segment_min_s <= seg <= settings.live_segment_max_s:
            raise InvalidArgument(
                f"segment_s must be between {settings.live_segment_min_s} and {settings.live_segment_max_s} "
                "seconds (0 = the server's default)"
            )
        if header.sha256:
            raise InvalidArgument("sha256 checks a whole upload; a LIVE or FRAMES stream has none: leave it empty")
        if header.resume_upload_id and header.replace:
            raise InvalidArgument("a resumed stream continues its video: replace does not apply")
        return  # a live stream has no size to check
    if header.segment_s or header.resume_upload_id:
        raise InvalidArgument(
            "segment_s and resume_upload_id are for LIVE and FRAMES ingests (mode = INGEST_MODE_LIVE or _FRAMES)"
        )
    if header.size_bytes > settings.max_stored_video_bytes:
        raise ResourceExhausted(
            f"the upload is {header.size_bytes} bytes; the server takes at most {settings.max_stored_video_bytes}"
            + _store_bound_note(settings)
        )


def _store_bound_note(settings: Settings) -> str:
    """Why the bound is below max_upload_bytes, when it is: the store takes the video in one message."""
    if settings.max_stored_video_bytes >= settings.max_upload_bytes:
        return ""
    return (
        " (the store receives the video in one query message; Info's limits.max_stored_video_bytes): "
        "split the video, or serve this server on an in-process embedded store"
    )


def check_video(info: VideoInfo, settings: Settings) -> None:
    """Refuse, from the probe and before any frame is decoded, videos the server does not take."""
    if info.width * info.height > settings.max_video_pixels:
        raise InvalidArgument(
            f"the video is {info.width}x{info.height} ({info.width * info.height} pixels); the server takes at most "
            f"{settings.max_video_pixels} pixels a frame: scale it down first"
        )
    short_side = min(info.width, info.height)
    if short_side > 0 and max(info.width, info.height) > MAX_VIDEO_ASPECT * short_side:
        raise InvalidArgument(
            f"the video is {info.width}x{info.height}; the server takes frames up to {MAX_VIDEO_ASPECT}:1 wide or tall"
        )
    if not math.isfinite(info.duration_s) or info.duration_s > settings.max_video_duration_s:
        raise InvalidArgument(
            f"the video lasts {info.duration_s:.0f} s; the server takes at most {settings.max_video_duration_s:.0f} s: "
            "split it into parts"
        )


def check_size(header: pb.IngestHeader, received: int, finished: bool) -> None:
    """header.size_bytes, when given, must be what arrives: no more while receiving, exactly that at the end."""
    declared = header.size_bytes
    if declared and (received > declared or (finished and received != declared)):
        raise DataLoss(
            f"the header says size_bytes={declared}, {'at least ' if not finished else ''}{received} bytes arrived; "
            "resend the video with its true size (or size_bytes=0 when unknown)"
        )


async def _until(chunks: AsyncIterator[T], stopped: asyncio.Event) -> AsyncIterator[T]:
    """The caller's chunks (or frames) until StopIngest: then the stream ends as if the caller had closed it."""
    it = chunks.__aiter__()
    stop_wait: asyncio.Future[object] = asyncio.ensure_future(stopped.wait())
    try:
        while True:
            nxt: asyncio.Future[object] = asyncio.ensure_future(it.__anext__())
            await asyncio.wait({nxt, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
            if not nxt.done():
                nxt.cancel()
                return
            try:
                chunk = nxt.result()
            except StopAsyncIteration:
                return
            yield cast(T, chunk)
    finally:
        stop_wait.cancel()


def shot_windows(header: pb.IngestHeader, settings: Settings) -> bool:
    """Whether an upload's windows follow its shots: asked for, or the server's default where it applies."""
    if header.sampling.windows == pb.WINDOWS_UNSPECIFIED:
        return settings.default_windows == "shots" and not header.sampling.keyframes
    return header.sampling.windows == pb.WINDOWS_SHOTS


def close_shots(records: list[FrameRecord]) -> int:
    """Each shot ends where the next starts, the last one with the last frame's window; -> shots found."""
    starts: dict[int, float] = {}
    for r in records:
        if r.shot is not None and r.shot_start_s is not None:
            starts.setdefault(r.shot, r.shot_start_s)
    if not starts:
        return 0
    order = sorted(starts)
    ends = {shot: starts[after] for shot, after in pairwise(order)}
    ends[order[-1]] = max(r.end_s for r in records if r.shot == order[-1])
    for r in records:
        if r.shot is not None:
            r.shot_end_s = ends[r.shot]
    return len(starts)


def _thumbnail(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=85)
    return out.getvalue()


class IngestService:
    def __init__(self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor
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

    async def ingest(self, header: pb.IngestHeader, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        """An UPLOAD or LIVE ingest: the video's bytes follow the header."""
        await self._gated(header, lambda metadata: self._ingest(header, metadata, chunks, emit))

    async def ingest_frames(self, header: pb.IngestHeader, frames: AsyncIterator[pb.IngestFrame], emit: Emit) -> None:
        """A FRAMES ingest: the sender's pictures follow the header."""
        live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor, _thumbnail)

        async def run(metadata: dict) -> None:
            stopped = asyncio.Event()
            self._stops[cast(asyncio.Task, asyncio.current_task())] = stopped.set
            await live.run_frames(header, metadata, _until(frames, stopped), emit)

        await self._gated(header, run)

    async def _gated(self, header: pb.IngestHeader, run: Callable[[dict], Awaitable[None]]) -> None:
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

    async def stop(self, video_id: str) -> pb.StopIngestResponse:
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
        video = await loop.run_in_executor(self.executor, self.catalog.get_video, video_id)
        return pb.StopIngestResponse(video=video_message(video)) if video is not None else pb.StopIngestResponse()

    async def close(self) -> None:
        """Server shutdown: running pulls end "interrupted" (their sources did not end)."""
        self._closing = True
        for job in self._pulls:
            job.cancel()
        if self._pulls:
            await asyncio.wait(set(self._pulls), timeout=self.settings.grace_s)

    async def _ingest(self, header: pb.IngestHeader, metadata: dict, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        if header.source_url:
            await self._pull(header, metadata, emit)
            return
        if header.mode == pb.INGEST_MODE_LIVE:
            live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor, _thumbnail)
            stopped = asyncio.Event()
            self._stops[cast(asyncio.Task, asyncio.current_task())] = stopped.set
            await live.run(header, metadata, _until(chunks, stopped), emit)
            return
        existing = await loop.run_in_executor(self.executor, self.catalog.get_video, header.video_id)
        if existing is not None and not header.replace:
            raise AlreadyExists(
                f"video {header.video_id!r} exists; set IngestHeader.replace (CLI: --replace) to overwrite it"
            )
        await emit(pb.IngestEvent(accepted=pb.IngestAccepted(video_id=header.video_id, replacing=existing is not None)))

        progress = pb.IngestProgress()
        suffix = Path(header.filename).suffix[:16] if header.filename else ""
        limit = self.settings.max_stored_video_bytes
        spool = Spool(self.settings.spool_dir, limit, suffix)
        try:
            last = time.perf_counter()
            async for chunk in chunks:
                try:
                    spool.write(chunk)
                except UploadTooLarge as e:
                    raise ResourceExhausted(str(e) + _store_bound_note(self.settings)) from e
                check_size(header, spool.size, finished=False)
                metrics.INGEST_BYTES.inc(len(chunk))
                progress.bytes_received = spool.size
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(pb.IngestEvent(progress=progress))
            digest = spool.finish()
            received = time.perf_counter()
            if spool.size == 0:
                raise InvalidArgument("the upload is empty: send the video's bytes as chunks after the header")
            check_size(header, spool.size, finished=True)
            if header.sha256 and header.sha256 != digest:
                raise DataLoss(f"the upload's sha256 is {digest}, the header says {header.sha256}; resend the video")
            await emit(pb.IngestEvent(progress=progress))
            info = await loop.run_in_executor(self.executor, probe, spool.path)
            check_video(info, self.settings)
            frames, vectors, thumbs, decode_s, embed_s = await self._embed_video(header, spool.path, progress, emit)
            if not frames:
                raise InvalidArgument("no frame could be sampled from the video")
            record = self._record(header, metadata, info, spool.size, digest, frames)
            record.shots = close_shots(frames)
            # the video's blob is the spool file: the in-process store copies it file to file; a remote one
            # reads it into its one message (bounded by max_stored_video_bytes, checked as the bytes arrived)
            blob = FileBlob(spool.path, spool.size)
            store_started = time.perf_counter()
            await loop.run_in_executor(
                self.executor,
                lambda: self.catalog.add_video(record, blob, frames, vectors, thumbs, replace=existing is not None),
            )
            done = time.perf_counter()
        finally:
            spool.discard()
        progress.frames_stored = len(frames)
        metrics.INGEST_FRAMES.labels("stored").inc(len(frames))
        timings = pb.IngestTimings(
            receive_s=received - t0, decode_s=decode_s, embed_s=embed_s, store_s=done - store_started, total_s=done - t0
        )
        await emit(pb.IngestEvent(progress=progress))
        await emit(pb.IngestEvent(done=pb.IngestDone(video=video_message(record), frames=len(frames), timings=timings)))
        log.info(
            "ingested %s: %d frames, %.1f s of video in %.2f s",
            header.video_id,
            len(frames),
            info.duration_s,
            done - t0,
        )

    async def _pull(self, header: pb.IngestHeader, metadata: dict, emit: Emit) -> None:
        """A LIVE ingest of what the server reads from header.source_url. It runs as a task of its own so
        that a caller who cancels the call ends it cleanly (like StopIngest: "complete") rather than
        breaking it, while a server shutdown cancels it ("interrupted")."""
        live_header = pb.IngestHeader()
        live_header.CopyFrom(header)
        live_header.mode = pb.INGEST_MODE_LIVE
        if not live_header.filename:
            live_header.filename = redacted(header.source_url)
        caller_gone = False

        async def relay(event: pb.IngestEvent) -> None:
            if not caller_gone:
                await emit(event)

        pull = Pull(header.source_url, self.settings, relay)
        self._stops[cast(asyncio.Task, asyncio.current_task())] = pull.stop
        live = LiveIngest(self.settings, self.embedder, self.catalog, self.executor, _thumbnail)
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

    def _record(
        self,
        header: pb.IngestHeader,
        metadata: dict,
        info: VideoInfo,
        size: int,
        digest: str,
        frames: list[FrameRecord],
    ) -> VideoRecord:
        duration = info.duration_s or (frames[-1].end_s if frames else 0.0)
        return VideoRecord(
            video_id=header.video_id,
            filename=header.filename,
            duration_s=duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            codec=info.codec,
            container=info.container,
            ingested_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
            frames=len(frames),
            size_bytes=size,
            sha256=digest,
            metadata=metadata,
        )

    async def _embed_video(
        self, header: pb.IngestHeader, path: Path, progress: pb.IngestProgress, emit: Emit
    ) -> tuple[list[FrameRecord], np.ndarray, list[bytes] | None, float, float]:
        """Decode in a thread, embed as frames arrive (the Embedder's stream bounds what is in flight), report
        progress."""
        fps = header.sampling.fps or 1.0
        max_frames = header.sampling.max_frames or self.settings.max_frames
        decoded = [0]
        decode_s = [0.0]
        want_thumbs = header.thumbnails
        shots = shot_windows(header, self.settings)
        stats = DecodeStats()

        def on_decoded(n: int) -> None:
            decoded[0] = n

        def produce(should_stop: Callable[[], bool]) -> Iterator[tuple[tuple[SampledFrame, bytes | None], np.ndarray]]:
            started = time.perf_counter()
            sampled = sample(
                path,
                fps,
                max_frames,
                self.embedder.framing,
                on_decoded,
                should_stop,
                keyframes=header.sampling.keyframes,
                stats=stats,
                shots=ShotDetector(self.settings.shot_threshold) if shots else None,
                detect_fps=self.settings.shot_detect_fps,
            )
            for frame in sampled:
                thumb = _thumbnail(frame.rgb) if want_thumbs else None
                decode_s[0] = time.perf_counter() - started
                yield (frame, thumb), frame.rgb
            decode_s[0] = time.perf_counter() - started

        decoder = ThreadIterator(self.executor, produce, maxsize=2 * self.embedder.image_max_batch)
        records: list[FrameRecord] = []
        thumbs: list[bytes] = []
        results: list[np.ndarray] = []
        embed_s = 0.0
        last = time.perf_counter()
        stream = self.embedder.embed_stream(decoder)
        try:
            async for done in stream:
                frame, thumb = done.key
                shot = (frame.shot, frame.shot_start_s) if frame.shot >= 0 else (None, None)
                records.append(FrameRecord(frame.time_s, frame.start_s, frame.end_s, *shot))
                if thumb is not None:
                    thumbs.append(thumb)
                results.append(done.vector)
                embed_s += done.inference_s
                progress.frames_decoded = max(decoded[0], len(records))
                progress.frames_embedded = len(results)
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(pb.IngestEvent(progress=progress))
        finally:
            await stream.aclose()
            await decoder.aclose()
        progress.frames_decoded = max(decoded[0], len(records))
        progress.frames_embedded = len(results)
        metrics.INGEST_FRAMES.labels("decoded").inc(progress.frames_decoded)
        metrics.INGEST_FRAMES.labels("embedded").inc(len(results))
        if shots:
            log.info(
                "%s: %d shots, detection %.3f s CPU over %d decoded frames",
                header.video_id,
                stats.cuts + 1,
                stats.detect_s,
                stats.decoded,
            )
        vectors = np.stack(results) if results else np.zeros((0, self.embedder.dim), np.float32)
        return records, vectors, (thumbs if want_thumbs else None), decode_s[0], embed_s
