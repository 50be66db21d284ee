"""Automatic resume of a LIVE or FRAMES upload after a broken link (a dropped connection, a server restart).

The caller's source is read by one pump (a thread for Client, a task for AsyncClient) into a buffer that
holds the bytes from the server's last reported commit on; each Ingest call sends from its own position in
that buffer and never touches the source, so a call that breaks leaves nothing half-read behind. When a call
fails with a status a broken link gives, the client waits (backoff), then calls again with the upload id
and the offset the server last reported committed (IngestHeader.resume_upload_id / resume_offset) and sends
the kept bytes from there: the server stores each byte once. If the server has committed more than it
could report, it names its offset (FAILED_PRECONDITION) and the client goes on from that one.

The buffer is bounded (the source waits while it is full): the server commits every few seconds of video,
which frees it. Only once the source has ended by itself does a call's reading end with SOURCE_END, for which
the call sends IngestRequest.end: a call that is cut, superseded or stopped never says the stream is complete.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import grpc

from moments.v1 import moments_pb2 as pb

# Statuses a broken link or a restarting server gives; anything else is the stream's own fault.
RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED}
)
_SERVER_OFFSET = re.compile(r"resume from offset (\d+)")
BUFFER_LIMIT = 64 << 20
# A resumed call waits 0.5 s after a break, doubling up to 8 s while breaks follow each other (the schedule that
# ingest_events documents); the number of tries is the caller's (resume_retries), the schedule is not.
BACKOFF_S = 0.5
BACKOFF_MAX_S = 8.0


class _SourceEnd:
    def __repr__(self) -> str:
        return "SOURCE_END"


#: What Pump.pieces/apieces yield last when the source has ended by itself (the call then sends its end marker).
SOURCE_END: Any = _SourceEnd()


class Resume:
    """Where an upload stands, and when to try again. Offsets are bytes of a LIVE stream, or frames of a
    FRAMES stream (``frames=True``)."""

    def __init__(self, retries: int, frames: bool = False) -> None:
        self.frames = frames
        self.retries = retries
        self.left = retries
        self.wait_s = BACKOFF_S
        self.upload_id = ""
        self.committed = 0  # the server's last reported commit: where a resumed call starts

    def seen(self, message: pb.IngestEvent, buffer: Buffer | Frames) -> None:
        kind = message.WhichOneof("event")
        if kind == "accepted" and message.accepted.upload_id:
            self.upload_id = message.accepted.upload_id
        elif kind == "committed":
            done = message.committed.frames if self.frames else message.committed.bytes
            self.committed = max(self.committed, done)
            buffer.release(self.committed)
            self.left, self.wait_s = self.retries, BACKOFF_S  # progress: the next break starts over

    def after(self, e: grpc.RpcError, buffer: Buffer | Frames) -> float | None:
        """Seconds to wait before resuming after `e`, or None when the call's failure is final."""
        code = e.code()
        if not self.upload_id or self.left <= 0:
            return None
        if code == grpc.StatusCode.FAILED_PRECONDITION:
            # the server committed more than it could report before the break: go on from its offset
            found = _SERVER_OFFSET.search(e.details() or "")
            if found is None or not buffer.holds(int(found.group(1))):
                return None
            self.committed = int(found.group(1))
            buffer.release(self.committed)
            self.left -= 1
            return 0.0
        if code not in RETRYABLE:
            return None
        self.left -= 1
        wait, self.wait_s = self.wait_s, min(self.wait_s * 2, BACKOFF_MAX_S)
        return wait

    def header(self, first: pb.IngestHeader) -> pb.IngestHeader:
        header = pb.IngestHeader()
        header.CopyFrom(first)
        header.resume_upload_id, header.resume_offset = self.upload_id, self.committed
        header.replace = False  # a resumed stream goes on with its own video
        return header


class Buffer:
    """The source's bytes from the last commit on. Thread-safe (Client's pump is a thread); AsyncClient's
    pump and calls share one event loop and use the same methods without blocking (see Pump.apieces)."""

    def __init__(self, limit: int = BUFFER_LIMIT) -> None:
        self.cond = threading.Condition()
        self.data = bytearray()
        self.start = 0  # stream offset of data[0]
        self.ended = False
        self.complete = False  # the source ended by itself, without an error (not stopped)
        self.error: BaseException | None = None
        self.limit = limit
        self.event: asyncio.Event | None = None  # AsyncClient: set whenever data, end or room changes

    @property
    def end(self) -> int:
        return self.start + len(self.data)

    def holds(self, offset: int) -> bool:
        with self.cond:
            return self.start <= offset <= self.end

    def full(self) -> bool:
        return len(self.data) >= self.limit

    def put(self, chunk: bytes) -> bool:
        """False once the upload has ended (the pump stops reading the source)."""
        with self.cond:
            while self.full() and not self.ended:
                self.cond.wait()
            if self.ended:
                return False
            self.data.extend(chunk)
            self._changed()
            return True

    def finish(self, error: BaseException | None = None, complete: bool = False) -> None:
        with self.cond:
            self.ended, self.error = True, error
            self.complete = self.complete or complete
            self._changed()

    def release(self, offset: int) -> None:
        """The server stored everything before `offset`: it is never sent again."""
        with self.cond:
            n = min(max(0, offset - self.start), len(self.data))
            del self.data[:n]
            self.start += n
            self._changed()

    def read(self, pos: int, n: int) -> Any:
        """Up to n bytes (frames) from offset `pos` if there are any now (empty: none yet; None: the source
        ended; the source's own failure is raised once everything before it was read)."""
        with self.cond:
            if pos < self.start:
                raise RuntimeError(f"offset {pos} was released (the buffer starts at {self.start})")
            if pos < self.end:
                i = pos - self.start
                piece = self.data[i : i + n]
                return bytes(piece) if isinstance(piece, bytearray) else piece
            if not self.ended:
                return self.data[:0]
            if self.error is not None:
                raise self.error
            return None

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)

    def _changed(self) -> None:
        self.cond.notify_all()
        if self.event is not None:
            self.event.set()


class Frames(Buffer):
    """The same for FRAMES: the frame requests from the last commit on; offsets count frames."""

    def __init__(self, limit: int = 256) -> None:
        super().__init__(limit)
        self.data: list[pb.IngestRequest] = []  # type: ignore[assignment]

    def put(self, chunk: pb.IngestRequest) -> bool:  # type: ignore[override]
        return super().put([chunk])  # type: ignore[arg-type]


#: What a pump reads (made by the first call): an iterator, or with AsyncClient an async iterable.
PumpSource = Callable[[], AsyncIterable[Any] | Iterator[Any]]
#: What the buffer holds of each element of the source.
Items = Callable[[Any], Iterable[Any]]


class Pump:
    """The one reader of a resumable upload's source, and the calls' reading of the buffer it fills.

    The first call starts it (a daemon thread for Client, a task in the event loop for AsyncClient): it moves
    the source into the buffer, `items` turning each element of the source into what the buffer holds. Every
    call, the first and each resumed one, reads the buffer from its start offset on, `piece` bytes (frames) at
    a time, and never touches the source; its reading ends with SOURCE_END if the source has ended by itself."""

    def __init__(self, buffer: Buffer, piece: int, source: PumpSource, items: Items) -> None:
        self.buffer, self.piece = buffer, piece
        self.source, self.items = source, items  # called when the first call starts the pump
        self.generation = 0  # Client: the calls so far; a superseded call's reading stops
        self.running: threading.Thread | asyncio.Future[None] | None = None

    def pieces(self, start: int) -> Iterator[Any]:
        """Client: the buffer from `start` on, as it fills, until the source ends or a newer call starts;
        the first call starts the pump on `source()`."""
        if self.running is None:
            self.running = threading.Thread(
                target=self._fill, args=(self.source(), self.items), name="moments-live-source", daemon=True
            )
            self.running.start()
        self.generation += 1
        mine = self.generation
        pos = start
        while self.generation == mine:
            piece = self.buffer.read(pos, self.piece)
            if piece is None:
                if self.buffer.complete:
                    yield SOURCE_END
                return
            if not piece:
                self.buffer.wait(0.2)
                continue
            pos += len(piece)
            yield piece

    async def apieces(self, start: int) -> AsyncIterator[Any]:
        """AsyncClient: the buffer from `start` on, as it fills, until the source ends; the first call starts
        the pump on `source()` (a plain iterator is read in a worker thread)."""
        if self.running is None:
            self.buffer.event = asyncio.Event()
            self.running = asyncio.ensure_future(self._afill(self.source(), self.items))
        event = self.buffer.event
        assert event is not None
        pos = start
        while True:
            event.clear()
            piece = self.buffer.read(pos, self.piece)
            if piece is None:
                if self.buffer.complete:
                    yield SOURCE_END
                return
            if not piece:
                await event.wait()
                continue
            pos += len(piece)
            yield piece

    def stop(self) -> None:
        """The upload is over: a call still reading stops, the pump stops at its next element."""
        self.generation += 1
        self.buffer.finish()
        if isinstance(self.running, asyncio.Future):
            self.running.cancel()

    def _fill(self, source: AsyncIterable[Any] | Iterator[Any], items: Items) -> None:
        buffer = self.buffer
        try:
            if isinstance(source, AsyncIterable):
                raise TypeError(f"an async iterable ({type(source).__name__}) needs AsyncClient")
            for element in source:
                for item in items(element):
                    if not buffer.put(item):
                        return
            buffer.finish(complete=True)
        except BaseException as e:  # the source's own failure ends every call with it
            buffer.finish(e)

    async def _afill(self, source: AsyncIterable[Any] | Iterator[Any], items: Items) -> None:
        buffer, event = self.buffer, self.buffer.event
        assert event is not None

        async def put(item: Any) -> bool:  # waits in the loop (not on the lock) while the buffer is full
            while buffer.full() and not buffer.ended:
                event.clear()
                await event.wait()
            return buffer.put(item)

        try:
            if isinstance(source, AsyncIterable):
                async for element in source:
                    for item in items(element):
                        if not await put(item):
                            return
            else:
                end = object()
                while (element := await asyncio.to_thread(next, source, end)) is not end:
                    for item in items(element):
                        if not await put(item):
                            return
            buffer.finish(complete=True)
        except asyncio.CancelledError:
            buffer.finish()
            raise
        except BaseException as e:
            buffer.finish(e)
