"""The three kinds of Ingest call, each written once for both clients: an upload (a file, bytes or an iterator of
bytes), a stream of frames (INGEST_MODE_FRAMES) and a server-side pull (a URL). A :class:`Stream` builds the
header when the iteration starts (so an unreadable file fails there, before the call), then yields what follows
the header, in a thread (the sync client) or in the event loop (the asyncio client), and turns the answers into
:class:`IngestEvent` values."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass

import grpc

from moments.v1 import moments_pb2 as pb
from moments_client import _common as c
from moments_client._resume import SOURCE_END, Buffer, Frames, Items, Pump, PumpSource, Resume
from moments_client._uploads import Upload, open_upload, sha256_of, split
from moments_client.errors import MomentsError
from moments_client.types import IngestDone, IngestEvent, ingest_event

ProgressCallback = Callable[[IngestEvent], None]


class Stream:
    """One Ingest call. Subclasses build the header (:meth:`open`) and what follows it (:meth:`body`,
    :meth:`abody`), which ends with the end marker (IngestRequest.end) once the source has ended by itself."""

    #: what a blocking call says when the server's answers end without a done event
    ended = "the ingest stream ended without a done event"

    def __init__(self, video_id: str, timeout: float | None, unbounded: bool) -> None:
        self.video_id = video_id
        self.timeout = timeout
        self.unbounded = unbounded  # may never end: no deadline unless one is given
        self.size: int | None = None
        self.failure: BaseException | None = None  # what the caller's source raised, if anything
        self.resume: Resume | None = None  # a LIVE upload that resumes itself after a broken link
        self.first: pb.IngestHeader | None = None

    @property
    def sent(self) -> int:
        return 0

    def open(self, aio: bool) -> pb.IngestHeader:
        raise NotImplementedError

    def body(self) -> Iterator[pb.IngestRequest]:
        return iter(())

    async def abody(self) -> AsyncIterator[pb.IngestRequest]:
        for request in self.body():
            yield request

    def close(self) -> None:
        """Release the source (a file this call opened)."""

    def deadline(self, ingest_timeout: float) -> float | None:
        """An upload gets the client's ingest timeout; a stream that may never end, none unless one is given."""
        if self.timeout is not None:
            return self.timeout
        return None if self.unbounded else ingest_timeout

    def requests(self, header: pb.IngestHeader) -> Iterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=header)
        try:
            yield from self.body()
        except Exception as e:  # a read error: remember it, end the stream; the call is cancelled by the caller
            self.failure = e
            raise

    async def arequests(self, header: pb.IngestHeader) -> AsyncIterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=header)
        try:
            async for request in self.abody():
                yield request
        except Exception as e:
            self.failure = e
            raise

    def event(self, message: pb.IngestEvent) -> IngestEvent | None:
        if self.resume is not None:
            self.resume.seen(message, self.pump.buffer)
        return ingest_event(message, self.video_id, self.sent, self.size)

    def resumable(self, resume: Resume, buffer: Buffer, piece: int, source: PumpSource, items: Items) -> None:
        """This stream resumes itself after a broken link (LIVE and FRAMES uploads): one pump reads `source()`
        into `buffer` (each element as `items` gives it), which every call reads `piece` bytes (frames) at a
        time."""
        self.resume, self.pump = resume, Pump(buffer, piece, source, items)

    def retry_after(self, e: grpc.RpcError) -> float | None:
        """Seconds to wait before the call goes on with a resumed one, or None: `e` ends the stream."""
        if self.resume is None or self.failure is not None:
            return None
        return self.resume.after(e, self.pump.buffer)

    def resumed_header(self) -> pb.IngestHeader:
        assert self.resume is not None and self.first is not None
        return self.resume.header(self.first)

    def stop_resuming(self) -> None:
        """The call is over: a request iterator still waiting stops, the pump stops at its next chunk (the
        caller's source is left as it is)."""
        if self.resume is not None:
            self.pump.stop()

    def error(self, e: grpc.RpcError) -> BaseException:
        """What a failed call raises: the source's own error when it failed, else the call's status."""
        return self.failure or MomentsError.from_rpc_error(e, "Ingest")


class UploadStream(Stream):
    """A video sent in chunks (a path, bytes, a binary file, an iterator or async iterator of bytes)."""

    def __init__(
        self,
        source: c.AsyncSource,
        filename: str | None,
        sha256: str | bool | None,
        chunk_size: int,
        header: Callable[[str, str | None, int | None], pb.IngestHeader],
        video_id: str,
        timeout: float | None,
        live: bool,
        resume_retries: int = 0,
    ) -> None:
        super().__init__(video_id, timeout, unbounded=live)
        self.source, self.filename, self.sha256, self.chunk_size = source, filename, sha256, chunk_size
        self.header = header  # (filename, sha256 hex or None, size) -> the header
        self.upload: Upload | None = None
        self.lock = threading.Lock()
        if live and resume_retries > 0:
            self.resumable(Resume(resume_retries), Buffer(), chunk_size, self._pumped, self._chunks)

    @property
    def sent(self) -> int:
        return self.upload.sent if self.upload is not None else 0

    def open(self, aio: bool) -> pb.IngestHeader:
        upload = self.upload = open_upload(self.source, self.filename)
        try:
            digest = sha256_of(upload) if self.sha256 is True else (self.sha256 or None)
            header = self.header(upload.filename, digest, upload.size)
            if upload.aiterable is not None and not aio:
                raise TypeError("an async iterable needs AsyncClient.ingest")
        except BaseException:
            upload.close()
            raise
        self.size = upload.size
        self.first = header
        return header

    def _note_sent(self, end: int) -> None:
        assert self.upload is not None
        with self.lock:
            self.upload.sent = max(self.upload.sent, end)

    def _pumped(self) -> AsyncIterable[bytes] | Iterator[bytes]:
        """What the pump of a resumable upload reads."""
        assert self.upload is not None
        return self.upload.aiterable if self.upload.aiterable is not None else self.upload.chunks(self.chunk_size)

    def _chunks(self, piece: bytes) -> Iterable[bytes]:
        """What the buffer holds of a piece the pump read: Upload.chunks gives chunks already, an async iterable
        pieces of any size."""
        assert self.upload is not None
        return split(piece, self.chunk_size) if self.upload.aiterable is not None else (piece,)

    def body(self) -> Iterator[pb.IngestRequest]:
        assert self.upload is not None
        if self.resume is not None:
            pos = self.resume.committed
            for chunk in self.pump.pieces(pos):
                if chunk is SOURCE_END:
                    yield c.end_request()
                    return
                pos += len(chunk)
                self._note_sent(pos)
                yield pb.IngestRequest(chunk=chunk)
            return
        for chunk in self.upload.chunks(self.chunk_size):
            with self.lock:
                self.upload.sent += len(chunk)
            yield pb.IngestRequest(chunk=chunk)
        yield c.end_request()

    async def abody(self) -> AsyncIterator[pb.IngestRequest]:
        upload = self.upload
        assert upload is not None
        if self.resume is not None:
            pos = self.resume.committed
            async for chunk in self.pump.apieces(pos):
                if chunk is SOURCE_END:
                    yield c.end_request()
                    return
                pos += len(chunk)
                self._note_sent(pos)
                yield pb.IngestRequest(chunk=chunk)
            return
        if upload.aiterable is not None:
            async for piece in upload.aiterable:
                for chunk in split(piece, self.chunk_size):
                    upload.sent += len(chunk)
                    yield pb.IngestRequest(chunk=chunk)
        else:  # files are read in a worker thread, so the event loop never blocks on disk
            chunks = upload.chunks(self.chunk_size)
            while chunk := await asyncio.to_thread(next, chunks, b""):
                upload.sent += len(chunk)
                yield pb.IngestRequest(chunk=chunk)
        yield c.end_request()

    def close(self) -> None:
        self.stop_resuming()
        if self.upload is not None:
            self.upload.close()


class FramesStream(Stream):
    """Pictures sampled by the caller, each with its time (an iterable or async iterable of frames)."""

    def __init__(
        self,
        frames: Iterable[c.FrameItem] | AsyncIterable[c.FrameItem],
        header: Callable[[], pb.IngestHeader],
        video_id: str,
        timeout: float | None,
        resume_retries: int = 0,
    ) -> None:
        super().__init__(video_id, timeout, unbounded=True)
        self.frames, self.header = frames, header
        self.bytes_sent = 0
        if resume_retries > 0:
            self.resumable(Resume(resume_retries, frames=True), Frames(), 16, self._pumped, self._requests)

    @property
    def sent(self) -> int:
        return self.bytes_sent

    def open(self, aio: bool) -> pb.IngestHeader:
        self.first = self.header()
        return self.first

    def close(self) -> None:
        self.stop_resuming()

    def _request(self, item: c.FrameItem) -> pb.IngestRequest:
        request = c.frame_request(item)
        self.bytes_sent += len(request.frame.image)
        return request

    def _pumped(self) -> AsyncIterable[c.FrameItem] | Iterator[c.FrameItem]:
        """What the pump of a resumable stream reads."""
        return self.frames if isinstance(self.frames, AsyncIterable) else iter(self.frames)

    def _requests(self, item: c.FrameItem) -> list[pb.IngestRequest]:
        return [self._request(item)]

    def body(self) -> Iterator[pb.IngestRequest]:
        if self.resume is not None:
            for piece in self.pump.pieces(self.resume.committed):
                if piece is SOURCE_END:
                    yield c.end_request()
                    return
                yield from piece
            return
        for item in self.frames:  # type: ignore[union-attr]  # an async iterable fails here, as a source error
            yield self._request(item)
        yield c.end_request()

    async def abody(self) -> AsyncIterator[pb.IngestRequest]:
        if self.resume is not None:
            async for piece in self.pump.apieces(self.resume.committed):
                if piece is SOURCE_END:
                    yield c.end_request()
                    return
                for request in piece:
                    yield request
            return
        if isinstance(self.frames, AsyncIterable):
            async for item in self.frames:
                yield self._request(item)
        else:
            for item in self.frames:
                yield self._request(item)
        yield c.end_request()


class PullStream(Stream):
    """A server-side pull: the header names the URL and nothing follows it."""

    ended = "the pull ended without a done event"

    def __init__(self, header: Callable[[], pb.IngestHeader], video_id: str, timeout: float | None) -> None:
        super().__init__(video_id, timeout, unbounded=True)
        self.header = header

    def open(self, aio: bool) -> pb.IngestHeader:
        return self.header()


@dataclass
class Blocking:
    """An Ingest call run to its end: every event goes to ``on_progress``; the result is the done event."""

    stream: Stream
    on_progress: ProgressCallback | None

    def seen(self, event: IngestEvent, done: IngestDone | None) -> IngestDone | None:
        if self.on_progress is not None:
            self.on_progress(event)
        return event if isinstance(event, IngestDone) else done

    def result(self, done: IngestDone | None) -> IngestDone:
        if done is None:
            raise MomentsError(grpc.StatusCode.UNKNOWN, self.stream.ended, "Ingest")
        return done
