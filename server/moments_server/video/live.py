"""Decoding a live stream as its bytes arrive: a blocking byte source for PyAV, and the sampler over it.

The gRPC receive loop `feed`s the stream's bytes; PyAV reads them in the decoder's thread through
`GrowingSource.readinto`, which waits for more bytes until the stream ends. Consumed bytes are dropped,
so the source holds only what the demuxer has not read yet (bounded by `max_buffered`: `feed` waits while
it is full, which is the back-pressure on the sender). Containers that can be demuxed front to back
work (MPEG-TS, Matroska/WebM, fragmented MP4); a plain MP4 whose index comes last cannot be streamed.
"""

from __future__ import annotations

import io
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator

import av
import av.error

from moments_server.errors import BadVideo
from moments_server.framing import Framing
from moments_server.video.decode import SampledFrame


class Aborted(Exception):
    """The stream was abandoned (the caller went away or the ingest failed)."""


class GrowingSource(io.RawIOBase):
    def __init__(self, max_buffered: int = 8 << 20) -> None:
        self.max_buffered = max_buffered
        self._chunks: deque[memoryview] = deque()
        self._buffered = 0
        self._ended = False
        self._aborted = False
        self._cond = threading.Condition()
        self.consumed = 0  # bytes the demuxer has read

    # -- the writer (event loop side: call from a thread when it may block) --
    def feed(self, data: bytes) -> None:
        with self._cond:
            while self._buffered >= self.max_buffered and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted("the decoder stopped")
            self._chunks.append(memoryview(data))
            self._buffered += len(data)
            self._cond.notify_all()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def abort(self) -> None:
        with self._cond:
            self._aborted = True
            self._cond.notify_all()

    # -- the reader (PyAV, in the decoder's thread) --
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        with self._cond:
            while not self._chunks and not self._ended and not self._aborted:
                self._cond.wait()
            if self._aborted:
                raise Aborted("the stream was abandoned")
            n = 0
            while self._chunks and n < len(buffer):
                head = self._chunks[0]
                take = min(len(head), len(buffer) - n)
                buffer[n : n + take] = head[:take]
                n += take
                if take == len(head):
                    self._chunks.popleft()
                else:
                    self._chunks[0] = head[take:]
            self._buffered -= n
            self.consumed += n
            self._cond.notify_all()
            return n


def sample_stream(
    source: GrowingSource,
    fps: float,
    framing: Framing,
    should_stop: Callable[[], bool] | None = None,
    info: dict[str, object] | None = None,
    *,
    start_s: float | None = None,
    after_s: float = -1.0,
    on_keyframe: Callable[[float, int], None] | None = None,
    stream_offset: Callable[[int], int] = lambda pos: pos,
) -> Iterator[SampledFrame]:
    """The first frame of each 1/fps window of the stream, as it decodes.

    Times count from `start_s` (the stream's first timestamp, in the stream's seconds; None: this
    source's first frame, which `info["start_s"]` then reports); windows starting before `after_s` are
    skipped (a resumed stream's committed part). `on_keyframe(time_s, byte offset in this source)` hears of
    every keyframe packet: a decoder can restart there. `info` gets the codec, size, frame rate and
    container once open. Raises BadVideo naming the byte offset where the stream stopped decoding: the packet
    that failed to decode, else how far the demuxer had read (`stream_offset` maps a position in this source
    to one in the stream the caller sent)."""
    try:
        container = av.open(source, mode="r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise BadVideo(f"cannot read the stream as a video (at byte {source.consumed}): {e}") from e
    try:
        if not container.streams.video:
            raise BadVideo("the stream holds no video stream")
        stream = container.streams.video[0]
        # slice threads only: frame threads hold back as many frames as they are, which a live viewer waits for
        stream.thread_type = "SLICE"
        rate = float(stream.average_rate or stream.guessed_rate or 25)
        tb = float(stream.time_base) if stream.time_base else 1 / 90000
        if info is not None:
            ctx = stream.codec_context
            info.update(codec=ctx.name, width=ctx.width, height=ctx.height, fps=rate, container=container.format.name)
        last_slot = math.ceil(after_s * fps - 1e-6) - 1 if after_s > 0 else -1  # the windows before after_s
        kept = decoded = 0
        failing: int | None = None  # the packet being decoded
        try:
            for packet in container.demux(stream):
                if packet.is_keyframe and packet.pos is not None and packet.pts is not None:
                    if start_s is None:
                        start_s = float(packet.pts) * tb
                    if on_keyframe is not None:
                        on_keyframe(float(packet.pts) * tb - start_s, packet.pos)
                failing = packet.pos
                for frame in packet.decode():
                    decoded += 1
                    if should_stop is not None and should_stop():
                        return
                    t_abs = frame.time if frame.time is not None else (decoded - 1) / rate
                    if start_s is None:
                        start_s = t_abs
                    if info is not None:
                        info.setdefault("start_s", start_s)
                    t = max(t_abs - start_s, 0.0)
                    slot = math.floor(t * fps + 1e-6)
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                    yield SampledFrame(kept, t, slot / fps, (slot + 1) / fps, framing.frame(frame))
                    kept += 1
                failing = None
        except av.error.FFmpegError as e:
            at = stream_offset(failing if failing is not None else source.consumed)
            raise BadVideo(f"the stream stopped decoding at byte {at} after {decoded} frames: {e}") from e
        if decoded == 0:
            raise BadVideo("the stream holds no decodable frame")
    finally:
        container.close()
