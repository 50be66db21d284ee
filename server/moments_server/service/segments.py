"""Segment commits of LIVE and FRAMES streams (service/live.py).

A `Committer` groups embedded frames by `segment_s` seconds of media: as soon as a frame reaches a
segment's end, one transaction stores the segment. The first creates the Video (state "live", a LIVE
stream's bytes so far as its blob; a replace swaps the old video out there), the next ones add their bytes
as a Blob on it, their clips and frames, and the video's totals. Each commit is reported (`Committed`) and
searchable from then on. A clean end marks the video and its frames "complete"; a failure leaves what was
committed, marked "interrupted".
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from moments_server import metrics
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import (
    COMPLETE,
    FRAMES_CONTAINER,
    INTERRUPTED,
    LIVE,
    FrameRecord,
    PropertyValue,
    VideoRecord,
    now_date,
)
from moments_server.errors import InvalidArgument
from moments_server.service.events import Committed, Emit
from moments_server.service.requests import IngestSpec

log = logging.getLogger(__name__)


class StoreCalls(Protocol):
    """Where a Committer stores: the catalog, its executor (LiveIngest), and the vectors' width."""

    catalog: Catalog
    executor: Any

    @property
    def dim(self) -> int: ...

    async def call(self, fn: Callable[[], Any]) -> Any: ...


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
        ingest: StoreCalls,
        header: IngestSpec,
        metadata: dict[str, PropertyValue],
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
        dim = self.ingest.dim
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
                ingested_at=now_date(),
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
        await self.emit(Committed(self.stored, media_s, self.frames_total, self.segments))


class ByteStream:
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


class FrameStream:
    """FRAMES: no bytes to store; the video is described by its first frame."""

    def __init__(self) -> None:
        self.size: tuple[int, int] = (0, 0)

    def take_blob(self) -> bytes:
        return b""

    def restart_point(self, media_s: float) -> tuple[int, int]:
        return 0, 0

    def describe(self) -> dict[str, Any]:
        return {"width": self.size[0], "height": self.size[1], "codec": FRAMES_CONTAINER, "container": FRAMES_CONTAINER}
