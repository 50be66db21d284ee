"""LIVE and FRAMES ingests: a stream embedded as it arrives and committed segment by segment.

LIVE: the receive loop feeds the container bytes to the decoder (video/live.py, in a thread) and keeps
those not yet stored. FRAMES: the sender's pictures are decoded one by one (video/frames.py), each standing
for the time until the next one. Either way the frames go through the Embedder's stream in order to a
`Committer` (service/segments.py), which stores them segment by segment. A broken stream resumes by its
upload id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np

from moments_server import metrics
from moments_server.bridge import ThreadIterator
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import COMPLETE, FRAMES_CONTAINER, FrameRecord, PropertyValue, VideoRecord
from moments_server.config import Settings
from moments_server.errors import (
    AlreadyExists,
    BadVideo,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)
from moments_server.inference.embedder import Embedder
from moments_server.inference.priority import lower_this_thread
from moments_server.service.events import Accepted, Done, Emit, Progress, Timings
from moments_server.service.requests import FrameIn, IngestSpec
from moments_server.service.segments import ByteStream, Committer, FrameStream
from moments_server.video.decode import SampledFrame
from moments_server.video.frames import DecodedFrame, check_time, decode_frame
from moments_server.video.live import GrowingSource, sample_stream
from moments_server.video.thumbnails import thumbnail

log = logging.getLogger(__name__)
Metadata = dict[str, PropertyValue]


async def _whatever_comes(cleanup: Coroutine[Any, Any, None]) -> None:
    """Run a stream's last cleanup (its state written) to its end even when the call's cancellation lands in
    it: a broken stream's own error starts the cleanup, and the cancellation grpc.aio delivers after it (the
    caller reset the call) would otherwise stop it half-way and leave the video "live"."""
    job = asyncio.ensure_future(cleanup)
    try:
        await asyncio.shield(job)
    except asyncio.CancelledError:
        await asyncio.wait({job})  # the cleanup ends, then the cancellation goes on
        raise


class LiveIngest:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        catalog: Catalog,
        executor: Executor,
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor

    @property
    def dim(self) -> int:
        return self.embedder.dim

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _resumed(self, header: IngestSpec, frames: bool) -> VideoRecord:
        """The video of the upload to resume, checked against the header."""
        video = await self.call(lambda: self.catalog.find_upload(header.resume_upload_id))
        if video is None or video.video_id != header.video_id:
            expired = await self.call(lambda: self.catalog.find_expired_upload(header.resume_upload_id))
            if expired is not None and expired.video_id == header.video_id:
                raise NotFound(
                    f"upload {header.resume_upload_id!r} of video {header.video_id!r} expired: it had no activity "
                    f"for {self.settings.upload_ttl_s:.0f} s (upload_ttl_s); its committed part stays, "
                    "start a new stream (replace) to continue"
                )
            raise NotFound(
                f"no live upload {header.resume_upload_id!r} of video {header.video_id!r}: start a new stream"
            )
        if video.state == COMPLETE:
            raise FailedPrecondition(f"video {video.video_id!r} is complete: its stream has nothing to resume")
        if frames != (video.container == FRAMES_CONTAINER):
            raise FailedPrecondition(
                f"upload {video.upload_id!r} is a {'FRAMES' if not frames else 'LIVE'} stream: resume it in "
                f"mode {'INGEST_MODE_LIVE' if not frames else 'INGEST_MODE_FRAMES'}"
            )
        stands = video.frames if frames else video.size_bytes
        if header.resume_offset != stands:
            what = "frames" if frames else "bytes"
            raise FailedPrecondition(
                f"the server has stored {stands} {what} of upload {video.upload_id!r}; "
                f"resume from offset {stands} (not {header.resume_offset})"
            )
        return video

    async def _open(self, header: IngestSpec, emit: Emit, frames: bool) -> tuple[VideoRecord | None, bool, str]:
        """-> (the resumed video or None, whether an existing video is replaced, the upload id); accepted sent."""
        video: VideoRecord | None = None
        replace = False
        if header.resume_upload_id:
            video = await self._resumed(header, frames)
        else:
            existing = await self.call(lambda: self.catalog.get_video(header.video_id))
            if existing is not None and not header.replace:
                raise AlreadyExists(f"video {header.video_id!r} exists; pass --replace (replace=true) to overwrite it")
            replace = existing is not None
        upload_id = video.upload_id if video else secrets.token_urlsafe(12)
        accepted = Accepted(header.video_id, replacing=replace, upload_id=upload_id)
        if video is not None:
            accepted.offset = video.frames if frames else video.size_bytes
            accepted.media_s = video.duration_s
        await emit(accepted)
        return video, replace, upload_id

    async def _done(self, committer: Committer, emit: Emit, t0: float) -> None:
        assert committer.video is not None
        await emit(Done(committer.video, committer.frames_total, Timings(total_s=time.perf_counter() - t0)))
        log.info(
            "stream %s complete: %d frames in %d segments",
            committer.header.video_id,
            committer.frames_total,
            committer.segments,
        )

    # -- LIVE: container bytes --------------------------------------------------------------------------------
    async def run(self, header: IngestSpec, metadata: Metadata, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        s = self.settings
        seg_s = header.segment_s or s.live_segment_s
        fps = header.sampling.fps or 1.0
        video, replace, upload_id = await self._open(header, emit, frames=False)
        parts = ByteStream(video)
        committer = Committer(self, header, metadata, emit, parts, video, replace, upload_id, seg_s)
        source = GrowingSource()
        received = [0]
        # The decoder waits on the network and the feeding on the decoder for the stream's whole life: on
        # threads of the stream's own, never the store's (streams as many as store_threads took them all,
        # and then neither their bytes nor any store query could run).
        own_threads = ThreadPoolExecutor(
            max_workers=2,
            thread_name_prefix="live",
            initializer=lower_this_thread,  # ingest's lower priority (inference/priority.py)
            initargs=(self.embedder.policy.ingest_nice,),
        )

        if video is not None:  # a resumed stream: the container header, then from the last restart point
            prefix = await self.call(
                lambda: (
                    self.catalog.stored_bytes(header.video_id, 0, parts.init_end)
                    + self.catalog.stored_bytes(header.video_id, parts.restart, video.size_bytes)
                )
            )
            await loop.run_in_executor(own_threads, source.feed, prefix)

        async def receive() -> None:
            last = time.perf_counter()
            try:
                async for chunk in chunks:
                    parts.pending.extend(chunk)
                    received[0] += len(chunk)
                    metrics.INGEST_BYTES.inc(len(chunk))
                    if len(parts.pending) > s.max_upload_bytes:
                        raise ResourceExhausted(
                            f"{len(parts.pending)} bytes arrived that could not be committed yet (bound "
                            f"{s.max_upload_bytes}): the stream arrives faster than it can be decoded"
                        )
                    await loop.run_in_executor(own_threads, source.feed, bytes(chunk))
                    if time.perf_counter() - last >= self.settings.progress_every_s:
                        last = time.perf_counter()
                        await emit(Progress(bytes_received=received[0]))
            finally:
                source.end()

        def produce(should_stop: Callable[[], bool]) -> Iterator[tuple[tuple[SampledFrame, bytes | None], np.ndarray]]:
            frames = sample_stream(
                source,
                fps,
                self.embedder.framing,
                should_stop,
                parts.info,
                start_s=video.stream_start_s if video else None,
                after_s=video.duration_s if video else 0.0,
                on_keyframe=lambda t, pos: parts.keyframes.append((t, parts.stream_offset(pos))),
                stream_offset=parts.stream_offset,
            )
            for frame in frames:
                yield (frame, thumbnail(frame.rgb) if header.thumbnails else None), frame.rgb

        receiver = asyncio.ensure_future(receive())
        decoder = ThreadIterator(own_threads, produce)
        bad: list[BadVideo] = []

        async def decoded() -> AsyncIterator[tuple[tuple[SampledFrame, bytes | None], np.ndarray]]:
            """The decoder's frames; the receiver's failure (too much pending, the caller's error) ends them.
            Bad bytes end them too, after the frames decoded before (their whole segments are committed)."""
            while True:
                getter = asyncio.ensure_future(decoder.__anext__())
                try:
                    await asyncio.wait({getter, receiver}, return_when=asyncio.FIRST_COMPLETED)
                    if receiver.done() and receiver.exception() is not None:
                        receiver.result()
                    try:
                        item = await getter
                    except StopAsyncIteration:
                        return
                    except BadVideo as e:
                        bad.append(e)
                        return
                finally:
                    getter.cancel()
                yield item

        stream = self.embedder.embed_stream(decoded())
        try:
            async for done in stream:
                frame, thumb = done.key
                await committer.place(FrameRecord(frame.time_s, frame.start_s, frame.end_s), done.vector, thumb)
            if bad:
                raise bad[0]
            await receiver
            await committer.finish()
        finally:
            source.abort()
            receiver.cancel()
            try:
                await stream.aclose()
                await decoder.aclose()
            finally:
                own_threads.shutdown(wait=False)
                await _whatever_comes(committer.interrupted())
        await self._done(committer, emit, t0)

    # -- FRAMES: the sender's pictures ----------------------------------------------------------------------
    async def run_frames(
        self, header: IngestSpec, metadata: Metadata, frames_in: AsyncIterator[FrameIn], emit: Emit
    ) -> None:
        t0 = time.perf_counter()
        s = self.settings
        seg_s = header.segment_s or s.live_segment_s
        video, replace, upload_id = await self._open(header, emit, frames=True)
        parts = FrameStream()
        if video is not None:
            parts.size = (video.width, video.height)
        committer = Committer(self, header, metadata, emit, parts, video, replace, upload_id, seg_s)
        framing = self.embedder.framing
        loop = asyncio.get_running_loop()
        received = [video.frames if video else 0]

        async def decoded() -> AsyncIterator[tuple[tuple[int, float, bytes | None], np.ndarray]]:
            index = video.frames if video else 0
            # a resumed stream goes on at the committed end: its first frame is the one that ended it
            previous: float | None = None
            last = time.perf_counter()
            async for message in frames_in:
                if previous is None and video is not None and abs(message.time_s - video.duration_s) > 1e-6:
                    # the last committed frame ends where the next one starts: that one comes first
                    raise InvalidArgument(
                        f"frame {index}: a resumed stream goes on with its first frame not committed, the one at "
                        f"{video.duration_s} s (where the committed part ends); got time_s {message.time_s}"
                    )
                check_time(index, message.time_s, previous)
                data = message.image
                frame: DecodedFrame = await loop.run_in_executor(
                    self.executor, decode_frame, data, index, framing, s.max_image_bytes, s.max_image_pixels
                )
                if parts.size == (0, 0):
                    parts.size = (frame.width, frame.height)
                thumb = thumbnail(frame.rgb) if header.thumbnails else None
                metrics.INGEST_BYTES.inc(len(data))
                received[0] = index + 1
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(Progress(frames_decoded=received[0]))
                yield (index, message.time_s, thumb), frame.rgb
                previous = message.time_s
                index += 1

        # A frame stands until the next one: it is placed when the next one arrives (or the stream ends).
        held: tuple[float, np.ndarray, bytes | None] | None = None
        gap = 1.0  # a lone frame stands for a second
        stream = self.embedder.embed_stream(decoded())
        try:
            async for done in stream:
                _, t, thumb = done.key
                if held is not None:
                    gap = t - held[0]
                    await committer.place(FrameRecord(held[0], held[0], t), held[1], held[2])
                held = (t, done.vector, thumb)
            if held is not None:
                await committer.place(FrameRecord(held[0], held[0], held[0] + gap), held[1], held[2])
            await committer.finish()
        finally:
            try:
                await stream.aclose()
            finally:
                await _whatever_comes(committer.interrupted())
        await self._done(committer, emit, t0)
