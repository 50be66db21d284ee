"""LIVE and FRAMES ingests: a stream embedded as it arrives and committed segment by segment.

LIVE: the receive loop feeds the container bytes to the decoder (video/live.py, in a thread) and keeps
those not yet stored. FRAMES: the sender's pictures are decoded one by one (video/frames.py), each standing
for the time until the next one. Either way the frames go through the Embedder's stream in order, and a
`Committer` groups them by `segment_s` seconds of media: as soon as a frame reaches a segment's end, one
transaction stores the segment: the first creates the Video (state "live", a LIVE stream's bytes so far as
its blob; a replace swaps the old video out there), the next ones add their bytes as a Blob on it, their
clips and frames, and the video's totals. Each commit is reported (`committed`) and searchable from then
on. A clean end of the stream marks the video and its frames "complete"; a stream that breaks after a
commit leaves what was committed, marked "interrupted". A broken stream resumes by its upload id.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np

from moments.v1 import moments_pb2 as pb
from moments_server import metrics
from moments_server.bridge import ThreadIterator
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import (
    COMPLETE,
    FRAMES_CONTAINER,
    INTERRUPTED,
    LIVE,
    FrameRecord,
    VideoRecord,
)
from moments_server.config import Settings
from moments_server.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from moments_server.inference.embedder import Embedder
from moments_server.service.videos import video_message
from moments_server.video.decode import BadVideo, SampledFrame
from moments_server.video.frames import DecodedFrame, check_time, decode_frame
from moments_server.video.live import GrowingSource, sample_stream

log = logging.getLogger(__name__)

Emit = Callable[[pb.IngestEvent], Awaitable[None]]


@dataclass
class _Segment:
    index: int
    frames: list[FrameRecord] = field(default_factory=list)
    vectors: list[np.ndarray] = field(default_factory=list)
    thumbs: list[bytes] = field(default_factory=list)


class StreamParts(Protocol):
    """What a commit stores besides frames, by kind of stream."""

    def take_blob(self) -> bytes:
        """The stream's bytes received since the last commit (stored with this one)."""

    def restart_point(self, media_s: float) -> tuple[int, int]:
        """(where the container header ends, a byte offset a resumed decoder restarts from) for a stream
        committed up to media_s."""

    def describe(self) -> dict[str, Any]:
        """The new video's fps, width, height, codec, container and stream_start_s."""


class Committer:
    """Embedded frames in, segments of `seg_s` seconds of media committed as they complete."""

    def __init__(
        self,
        ingest: LiveIngest,
        header: pb.IngestHeader,
        metadata: dict,
        emit: Emit,
        parts: StreamParts,
        video: VideoRecord | None,
        replace: bool,
        upload_id: str,
        seg_s: float,
    ) -> None:
        self.ingest, self.header, self.metadata, self.emit, self.parts = ingest, header, metadata, emit, parts
        self.video, self.replace, self.upload_id, self.seg_s = video, replace, upload_id, seg_s
        self.stored = video.size_bytes if video else 0
        self.frames_total = video.frames if video else 0
        self.segments = 0
        self.seg = _Segment(math.floor((video.duration_s if video else 0.0) / seg_s + 1e-9))
        self._state_written = False
        # the last commit's store call and the record it stores: a cancel (the caller went away) leaves the call
        # to end in its thread, and the state is written after it, on the totals it stored
        self._storing: tuple[asyncio.Future[Any], VideoRecord] | None = None

    async def _store(self, call: Callable[[], None], record: VideoRecord) -> None:
        future = asyncio.get_running_loop().run_in_executor(self.ingest.executor, call)
        self._storing = (future, record)
        await asyncio.shield(future)
        self._storing = None
        self.video = record  # the video's totals change once its segment is stored

    async def place(self, frame: FrameRecord, vector: np.ndarray, thumb: bytes | None) -> None:
        index = math.floor(frame.start_s / self.seg_s + 1e-9)
        if index > self.seg.index:
            await self._commit(final=False)
            self.seg = _Segment(index)
        self.seg.frames.append(frame)
        self.seg.vectors.append(vector)
        if thumb is not None:
            self.seg.thumbs.append(thumb)
        if frame.end_s >= (self.seg.index + 1) * self.seg_s - 1e-6:  # the segment's last window has its frame
            await self._commit(final=False)
            self.seg = _Segment(self.seg.index + 1)

    async def finish(self) -> None:
        """The stream ended cleanly: the last segment, and the video complete."""
        await self._commit(final=True)
        assert self.video is not None
        self.video.state = COMPLETE
        final = self.video
        await self.ingest.call(lambda: self.ingest.catalog.set_state(final))
        self._state_written = True

    async def interrupted(self) -> None:
        """After a failure: what was committed stays, marked interrupted (best effort)."""
        if self._storing is not None:  # a commit the failure interrupted still runs: its state comes first
            future, record = self._storing
            await asyncio.wait({future})
            if not future.cancelled() and future.exception() is None:
                self.video = record
            self._storing = None
        if self.video is None or self._state_written:
            return
        self.video.state = INTERRUPTED
        broken = self.video
        with contextlib.suppress(Exception):  # the stream's own error is what the caller needs
            await asyncio.shield(self.ingest.call(lambda: self.ingest.catalog.set_state(broken)))
        log.warning("stream %s interrupted after %d segments", self.header.video_id, self.segments)

    async def _commit(self, final: bool) -> None:
        seg = self.seg
        if not seg.frames and not final:
            return
        catalog = self.ingest.catalog
        blob = self.parts.take_blob()
        if not seg.frames and not blob and self.video is not None:
            return  # nothing new to store (the end of a stream right after a commit)
        self.frames_total += len(seg.frames)
        media_s = seg.frames[-1].end_s if seg.frames else (self.video.duration_s if self.video else 0.0)
        dim = self.ingest.embedder.dim
        vectors = np.stack(seg.vectors) if seg.vectors else np.zeros((0, dim), np.float32)
        thumbs = seg.thumbs if self.header.thumbnails else None
        init_end, restart_at = self.parts.restart_point(media_s)
        if self.video is None:
            if not seg.frames:
                raise InvalidArgument("the stream ended before any frame could be sampled from it")
            d = self.parts.describe()
            record = VideoRecord(
                video_id=self.header.video_id,
                filename=self.header.filename,
                duration_s=media_s,
                fps=float(d.get("fps", 0.0)),
                width=int(d.get("width", 0)),
                height=int(d.get("height", 0)),
                codec=str(d.get("codec", "")),
                container=str(d.get("container", "")),
                ingested_at=datetime.now(UTC).isoformat(timespec="milliseconds"),
                frames=self.frames_total,
                size_bytes=len(blob),
                sha256="",
                metadata=self.metadata,
                state=LIVE,
                upload_id=self.upload_id,
                stream_start_s=float(d.get("stream_start_s", 0.0)),
                init_end=init_end,
                restart_offset=restart_at,
                active_at=time.time(),
            )
            replace = self.replace
            await self._store(lambda: catalog.add_video(record, blob, seg.frames, vectors, thumbs, replace), record)
        else:
            video = self.video
            record = dataclasses.replace(
                video,
                frames=self.frames_total,
                duration_s=max(video.duration_s, media_s),
                size_bytes=self.stored + len(blob),
                state=LIVE,
                restart_offset=max(video.restart_offset, restart_at),
                active_at=time.time(),
            )
            start = self.stored
            await self._store(
                lambda: catalog.add_segment(record, seg.index, blob, start, seg.frames, vectors, thumbs), record
            )
        self.stored += len(blob)
        self.segments += 1
        metrics.INGEST_FRAMES.labels("stored").inc(len(seg.frames))
        committed = pb.IngestCommitted(
            bytes=self.stored, media_s=media_s, frames=self.frames_total, segments=self.segments
        )
        await self.emit(pb.IngestEvent(committed=committed))


class _ByteStream:
    """LIVE: the received bytes not stored yet, and the keyframes a resumed decoder can restart from."""

    def __init__(self, video: VideoRecord | None) -> None:
        self.video = video
        self.pending = bytearray()
        self.info: dict[str, object] = {}
        # keyframes the demuxer saw: (media time, offset in the whole stream) - where a resume restarts
        self.keyframes: list[tuple[float, int]] = []
        self.init_end = video.init_end if video else 0
        self.restart = video.restart_offset if video else 0

    def stream_offset(self, pos: int) -> int:  # a resumed source is the header, then the stream from `restart`
        return pos if self.video is None or pos < self.init_end else self.restart + (pos - self.init_end)

    def take_blob(self) -> bytes:
        blob = bytes(self.pending)
        del self.pending[: len(blob)]
        return blob

    def restart_point(self, media_s: float) -> tuple[int, int]:
        seen = list(self.keyframes)
        first_key = seen[0][1] if seen else 0  # the container header ends here (on the first commit)
        usable = [i for i, (t, _) in enumerate(seen) if t <= media_s + 1e-6]
        restart_at = seen[usable[-1]][1] if usable else 0
        if len(usable) > 1:  # older restart points are never needed again (keeps this list short)
            del self.keyframes[: usable[-1]]
        return first_key, restart_at

    def describe(self) -> dict[str, Any]:
        i = self.info
        return {
            "fps": i.get("fps", 0.0),
            "width": i.get("width", 0),
            "height": i.get("height", 0),
            "codec": i.get("codec", ""),
            "container": i.get("container", ""),
            "stream_start_s": i.get("start_s", 0.0),
        }


class _FrameStream:
    """FRAMES: no bytes to store; the video is described by its first frame."""

    def __init__(self) -> None:
        self.size: tuple[int, int] = (0, 0)

    def take_blob(self) -> bytes:
        return b""

    def restart_point(self, media_s: float) -> tuple[int, int]:
        return 0, 0

    def describe(self) -> dict[str, Any]:
        return {"width": self.size[0], "height": self.size[1], "codec": FRAMES_CONTAINER, "container": FRAMES_CONTAINER}


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

    async def call(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _resumed(self, header: pb.IngestHeader, frames: bool) -> VideoRecord:
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

    async def _open(self, header: pb.IngestHeader, emit: Emit, frames: bool) -> tuple[VideoRecord | None, bool, str]:
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
        accepted = pb.IngestAccepted(video_id=header.video_id, replacing=replace, upload_id=upload_id)
        if video is not None:
            accepted.offset = video.frames if frames else video.size_bytes
            accepted.media_s = video.duration_s
        await emit(pb.IngestEvent(accepted=accepted))
        return video, replace, upload_id

    async def _done(self, committer: Committer, emit: Emit, t0: float) -> None:
        assert committer.video is not None
        await emit(
            pb.IngestEvent(
                done=pb.IngestDone(
                    video=video_message(committer.video),
                    frames=committer.frames_total,
                    timings=pb.IngestTimings(total_s=time.perf_counter() - t0),
                )
            )
        )
        log.info(
            "stream %s complete: %d frames in %d segments",
            committer.header.video_id,
            committer.frames_total,
            committer.segments,
        )

    # -- LIVE: container bytes --------------------------------------------------------------------------------
    async def run(self, header: pb.IngestHeader, metadata: dict, chunks: AsyncIterator[bytes], emit: Emit) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        s = self.settings
        seg_s = header.segment_s or s.live_segment_s
        fps = header.sampling.fps or 1.0
        video, replace, upload_id = await self._open(header, emit, frames=False)
        parts = _ByteStream(video)
        committer = Committer(self, header, metadata, emit, parts, video, replace, upload_id, seg_s)
        source = GrowingSource()
        received = [0]
        # The decoder waits on the network and the feeding on the decoder for the stream's whole life: on
        # threads of the stream's own, never the store's (streams as many as store_threads took them all,
        # and then neither their bytes nor any store query could run).
        own_threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="live")

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
                        await emit(pb.IngestEvent(progress=pb.IngestProgress(bytes_received=received[0])))
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
                yield (frame, self.thumbnail(frame.rgb) if header.thumbnails else None), frame.rgb

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
            await stream.aclose()
            await decoder.aclose()
            own_threads.shutdown(wait=False)
            await committer.interrupted()
        await self._done(committer, emit, t0)

    # -- FRAMES: the sender's pictures ----------------------------------------------------------------------
    async def run_frames(
        self, header: pb.IngestHeader, metadata: dict, frames_in: AsyncIterator[pb.IngestFrame], emit: Emit
    ) -> None:
        t0 = time.perf_counter()
        s = self.settings
        seg_s = header.segment_s or s.live_segment_s
        video, replace, upload_id = await self._open(header, emit, frames=True)
        parts = _FrameStream()
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
                thumb = self.thumbnail(frame.rgb) if header.thumbnails else None
                metrics.INGEST_BYTES.inc(len(data))
                received[0] = index + 1
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(pb.IngestEvent(progress=pb.IngestProgress(frames_decoded=received[0])))
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
            await stream.aclose()
            await committer.interrupted()
        await self._done(committer, emit, t0)
