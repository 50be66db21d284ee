"""LIVE ingest: decode a stream as its bytes arrive and commit it segment by segment.

The receive loop feeds the bytes to the decoder (video/live.py) and keeps those not yet stored; the
decoder's sampled frames go through the embedder's ingest lane in order; every `segment_s` seconds of
video (as soon as each of the segment's sampling windows has its frame, or a later frame shows the
segment is over) one transaction stores the segment: the first creates the Video (state "live", the bytes
so far as its blob; a replace swaps the old video out there), the next ones add their bytes as a Blob on
it, their clips and frames, and the video's totals. Each commit is reported (`committed`) and searchable
from then on. A clean end of the stream marks the video and its frames "complete"; a stream that breaks
after a commit leaves what was committed, marked "interrupted".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import cast

import numpy as np

from moments.v1 import moments_pb2 as pb
from moments_server import metrics
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import COMPLETE, INTERRUPTED, LIVE, FrameRecord, VideoRecord
from moments_server.config import Settings
from moments_server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from moments_server.inference.batcher import Lane
from moments_server.inference.embedder import Embedder
from moments_server.service.videos import video_message
from moments_server.video.decode import BadVideo, SampledFrame
from moments_server.video.live import GrowingSource, sample_stream

log = logging.getLogger(__name__)

Emit = Callable[[pb.IngestEvent], Awaitable[None]]
_END = object()


@dataclass
class _Segment:
    index: int
    frames: list[FrameRecord] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)


class LiveIngest:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        catalog: Catalog,
        executor: Executor,
        thumbnail: Callable[[np.ndarray], bytes],
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor
        self.thumbnail = thumbnail

    async def _resumed(self, header: pb.IngestHeader) -> VideoRecord:
        """The video of the upload to resume, checked against the header."""
        loop = asyncio.get_running_loop()
        video = await loop.run_in_executor(self.executor, self.catalog.find_upload, header.resume_upload_id)
        if video is None or video.video_id != header.video_id:
            raise NotFound(
                f"no live upload {header.resume_upload_id!r} of video {header.video_id!r}: start a new stream"
            )
        if video.state == COMPLETE:
            raise FailedPrecondition(f"video {video.video_id!r} is complete: its stream has nothing to resume")
        if header.resume_offset != video.size_bytes:
            raise FailedPrecondition(
                f"the server has stored {video.size_bytes} bytes of upload {video.upload_id!r}; "
                f"resume from offset {video.size_bytes} (not {header.resume_offset})"
            )
        return video

    async def run(self, header: pb.IngestHeader, metadata: dict, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        s = self.settings
        seg_s = header.segment_s or s.live_segment_s
        fps = header.sampling.fps or 1.0
        per_segment = max(1, round(seg_s * fps))  # sampling windows in a segment
        video: VideoRecord | None = None
        replace = False
        if header.resume_upload_id:
            video = await self._resumed(header)
        else:
            existing = await loop.run_in_executor(self.executor, self.catalog.get_video, header.video_id)
            if existing is not None and not header.replace:
                raise AlreadyExists(f"video {header.video_id!r} exists; pass --replace (replace=true) to overwrite it")
            replace = existing is not None
        upload_id = video.upload_id if video else secrets.token_urlsafe(12)
        accepted = pb.IngestAccepted(video_id=header.video_id, replacing=replace, upload_id=upload_id)
        if video is not None:
            accepted.offset, accepted.media_s = video.size_bytes, video.duration_s
        await emit(pb.IngestEvent(accepted=accepted))

        source = GrowingSource()
        # The decoder waits on the network and the feeding on the decoder for the stream's whole life: on
        # threads of the stream's own, never the store's (streams as many as store_threads took them all,
        # and then neither their bytes nor any store query could run).
        own_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="live")
        pending = bytearray()  # received, not stored yet
        stored = video.size_bytes if video else 0
        received = [0]
        info: dict[str, object] = {}
        frames_total = video.frames if video else 0
        segments = 0
        state_written = False
        storing: list[tuple[asyncio.Future[None], VideoRecord]] = []  # the last commit's store call, its record
        # keyframes the demuxer saw: (media time, offset in the whole stream) - where a resume restarts
        keyframes: list[tuple[float, int]] = []
        init_end = video.init_end if video else 0
        restart = video.restart_offset if video else 0

        def stream_offset(pos: int) -> int:  # a resumed source is the header, then the stream from `restart`
            return pos if video is None or pos < init_end else restart + (pos - init_end)

        if video is not None:  # a resumed stream: the container header, then from the last restart point
            prefix = await loop.run_in_executor(
                self.executor,
                lambda: (
                    self.catalog.stored_bytes(header.video_id, 0, init_end)
                    + self.catalog.stored_bytes(header.video_id, restart, stored)
                ),
            )
            await loop.run_in_executor(own_threads, source.feed, prefix)

        async def receive() -> None:
            last = time.perf_counter()
            try:
                async for chunk in chunks:
                    pending.extend(chunk)
                    received[0] += len(chunk)
                    metrics.INGEST_BYTES.inc(len(chunk))
                    if len(pending) > s.max_upload_bytes:
                        raise ResourceExhausted(
                            f"{len(pending)} bytes arrived that could not be committed yet (bound "
                            f"{s.max_upload_bytes}): the stream arrives faster than it can be decoded"
                        )
                    await loop.run_in_executor(own_threads, source.feed, bytes(chunk))
                    if time.perf_counter() - last >= 0.25:
                        last = time.perf_counter()
                        await emit(pb.IngestEvent(progress=pb.IngestProgress(bytes_received=received[0])))
            finally:
                source.end()

        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=64)
        stop = threading.Event()

        def produce() -> None:
            try:
                frames = sample_stream(
                    source,
                    fps,
                    self.embedder.image_size,
                    stop.is_set,
                    info,
                    start_s=video.stream_start_s if video else None,
                    after_s=video.duration_s if video else 0.0,
                    on_keyframe=lambda t, pos: keyframes.append((t, stream_offset(pos))),
                    stream_offset=stream_offset,
                )
                for frame in frames:
                    thumb = self.thumbnail(frame.rgb) if header.thumbnails else None
                    asyncio.run_coroutine_threadsafe(queue.put((frame, thumb)), loop).result()
                asyncio.run_coroutine_threadsafe(queue.put(_END), loop).result()
            except BaseException as e:
                if not stop.is_set():
                    asyncio.run_coroutine_threadsafe(queue.put(e), loop).result()

        async def store(call: Callable[[], None], record: VideoRecord) -> None:
            """A commit's store call; a cancel (the caller went away) leaves it to end: see the finally."""
            storing[:] = [(loop.run_in_executor(self.executor, call), record)]
            await asyncio.shield(storing[0][0])

        async def commit(seg: _Segment, final: bool) -> None:
            nonlocal video, stored, frames_total, segments
            if not seg.frames and not final:
                return
            blob = bytes(pending)
            del pending[: len(blob)]
            frames_total += len(seg.frames)
            media_s = seg.frames[-1].end_s if seg.frames else (video.duration_s if video else 0.0)
            vectors = np.stack(seg.vectors) if seg.vectors else np.zeros((0, self.embedder.dim), np.float32)
            thumbs = seg.thumbs if header.thumbnails else None
            # a later resume restarts decoding at the last keyframe at or before the committed end
            seen = list(keyframes)
            first_key = seen[0][1] if seen else 0  # the container header ends here (on the first commit)
            usable = [i for i, (t, _) in enumerate(seen) if t <= media_s + 1e-6]
            restart_at = seen[usable[-1]][1] if usable else 0
            if len(usable) > 1:  # older restart points are never needed again (keeps this list short)
                del keyframes[: usable[-1]]
            if video is None:
                if not seg.frames:
                    raise InvalidArgument("the stream ended before any frame could be sampled from it")
                video = VideoRecord(
                    video_id=header.video_id,
                    filename=header.filename,
                    duration_s=media_s,
                    fps=float(info.get("fps", 0.0)),  # type: ignore[arg-type]
                    width=int(info.get("width", 0)),  # type: ignore[call-overload]
                    height=int(info.get("height", 0)),  # type: ignore[call-overload]
                    codec=str(info.get("codec", "")),
                    container=str(info.get("container", "")),
                    ingested_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                    frames=frames_total,
                    size_bytes=len(blob),
                    sha256="",
                    metadata=metadata,
                    state=LIVE,
                    upload_id=upload_id,
                    stream_start_s=float(info.get("start_s", 0.0)),  # type: ignore[arg-type]
                    init_end=first_key,
                    restart_offset=restart_at,
                )
                record = video
                await store(
                    lambda: self.catalog.add_video(record, blob, seg.frames, vectors, thumbs, replace=replace), record
                )
            else:  # the video's totals change once the segment is stored
                record = dataclasses.replace(
                    video,
                    frames=frames_total,
                    duration_s=max(video.duration_s, media_s),
                    size_bytes=stored + len(blob),
                    state=LIVE,
                    restart_offset=max(video.restart_offset, restart_at),
                )
                start = stored
                await store(
                    lambda: self.catalog.add_segment(record, seg.index, blob, start, seg.frames, vectors, thumbs),
                    record,
                )
                video = record
            stored += len(blob)
            segments += 1
            metrics.INGEST_FRAMES.labels("stored").inc(len(seg.frames))
            committed = pb.IngestCommitted(bytes=stored, media_s=media_s, frames=frames_total, segments=segments)
            await emit(pb.IngestEvent(committed=committed))

        receiver = asyncio.ensure_future(receive())
        producer = loop.run_in_executor(own_threads, produce)
        in_flight: list[tuple[SampledFrame, bytes | None, asyncio.Future]] = []
        seg = _Segment(math.floor((video.duration_s if video else 0.0) / seg_s + 1e-9))
        try:
            getter: asyncio.Future[object] = asyncio.ensure_future(queue.get())
            while True:
                # the next frame, the oldest embedding (commits go in order, as soon as they can), or the
                # receiver's failure (too much pending, the caller's error) ends the stream
                waits: set[asyncio.Future] = {getter}
                if in_flight:
                    waits.add(in_flight[0][2])
                if not receiver.done():
                    waits.add(receiver)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                if receiver.done():
                    receiver.result()
                while in_flight and in_flight[0][2].done():
                    f, th, fu = in_flight.pop(0)
                    seg = await self._place(seg, f, th, fu.result().value, per_segment, seg_s, commit)
                if not getter.done():
                    continue
                item = getter.result()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    if isinstance(item, BadVideo):  # bad bytes: the whole segments decoded before them are kept
                        for f, th, fu in in_flight:
                            seg = await self._place(seg, f, th, (await fu).value, per_segment, seg_s, commit)
                        in_flight.clear()
                    raise item
                getter = asyncio.ensure_future(queue.get())
                frame, thumb = cast(tuple[SampledFrame, bytes | None], item)
                (fut,) = self.embedder.image_batcher.submit_nowait([frame.rgb], Lane.INGEST)
                in_flight.append((frame, thumb, fut))
            for f, th, fu in in_flight:
                seg = await self._place(seg, f, th, (await fu).value, per_segment, seg_s, commit)
            in_flight.clear()
            await receiver
            await commit(seg, final=True)
            assert video is not None
            video.state = COMPLETE
            final_video = video
            await loop.run_in_executor(self.executor, lambda: self.catalog.set_state(final_video))
            state_written = True
        finally:
            stop.set()
            source.abort()
            receiver.cancel()
            getter.cancel()
            for _, _, fu in in_flight:
                fu.cancel()
            while not producer.done():
                while not queue.empty():
                    queue.get_nowait()
                await asyncio.sleep(0.005)
            own_threads.shutdown(wait=False)
            for store_call, stored_record in storing:
                # a commit the stream's end interrupted (the caller went away) still runs in its thread: the
                # state is written after it, on the totals it stored (else it could land after and undo it)
                await asyncio.wait({store_call})
                if video is not None and not store_call.cancelled() and store_call.exception() is None:
                    video = stored_record
            if video is not None and not state_written:
                video.state = INTERRUPTED
                broken = video
                with contextlib.suppress(Exception):  # best effort: the stream's own error is what the caller needs
                    await asyncio.shield(loop.run_in_executor(self.executor, lambda: self.catalog.set_state(broken)))
                log.warning("live stream %s interrupted after %d segments", header.video_id, segments)
        done_at = time.perf_counter()
        await emit(
            pb.IngestEvent(
                done=pb.IngestDone(
                    video=video_message(video),
                    frames=frames_total,
                    timings=pb.IngestTimings(total_s=done_at - t0),
                )
            )
        )
        log.info("live stream %s complete: %d frames in %d segments", header.video_id, frames_total, segments)

    @staticmethod
    async def _place(
        seg: _Segment,
        frame: SampledFrame,
        thumb: bytes | None,
        vector: np.ndarray,
        per_segment: int,
        seg_s: float,
        commit: Callable[[_Segment, bool], Awaitable[None]],
    ) -> _Segment:
        index = math.floor(frame.start_s / seg_s + 1e-9)
        if index > seg.index:
            await commit(seg, False)
            seg = _Segment(index)
        seg.frames.append(FrameRecord(frame.time_s, frame.start_s, frame.end_s))
        seg.vectors.append(vector)
        if thumb is not None:
            seg.thumbs.append(thumb)
        if len(seg.frames) >= per_segment:  # every window of the segment has its frame
            await commit(seg, False)
            seg = _Segment(index + 1)
        return seg
