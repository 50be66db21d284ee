"""The synchronous Moments client.

>>> from moments_client import Client
>>> with Client("127.0.0.1:50051") as client:
...     done = client.ingest("cam.mp4", video_id="cam-1", metadata={"camera": "north"})
...     for moment in client.search("a red circle", top_k=5):
...         print(moment.video_id, moment.start_s, moment.end_s, moment.score)

Every call has a deadline (``timeout`` seconds, default 30; ingest 3600), idempotent calls (Search, Embed,
GetVideo, ListVideos, Info) are retried by the channel on UNAVAILABLE with backoff, and every failure is
raised as :class:`MomentsError` with the gRPC status code.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client import _common as c
from moments_client.errors import MomentsError
from moments_client.types import (
    Embeddings,
    Info,
    IngestDone,
    IngestEvent,
    SearchResult,
    Video,
    VideoPage,
    Where,
    ingest_event,
)

__all__ = ["Client"]

ProgressCallback = Callable[[IngestEvent], None]


class Client:
    """A connection to a Moments server (thread-safe; share one per process).

    ``target`` is ``host:port``, or several (``host1:port1,host2:port2``: calls are balanced over them
    round-robin; ``dns:///name:port`` balances over the addresses DNS gives); ``token`` is sent as
    ``authorization: Bearer <token>``; ``tls`` is None
    (plaintext), True (system roots), a CA bundle path, or :class:`grpc.ChannelCredentials`;
    ``client_cert`` is (certificate PEM path, key PEM path) for servers that require client certificates.
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        token: str | None = None,
        tls: c.TlsArg = None,
        *,
        client_cert: c.ClientCert | None = None,
        timeout: float = c.DEFAULT_TIMEOUT_S,
        ingest_timeout: float = c.DEFAULT_INGEST_TIMEOUT_S,
        options: Sequence[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.ingest_timeout = ingest_timeout
        creds = c.credentials(tls, client_cert)
        target, balancing = c.balanced_target(target)
        opts = c.channel_options([*balancing, *options])
        self._channel = (
            grpc.secure_channel(target, creds, options=opts) if creds else grpc.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.VideoSearchStub(self._channel)
        self._metadata = c.call_metadata(token, metadata)

    # ---------------------------------------------------------------------------------------- lifecycle

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel connects; MomentsError(UNAVAILABLE) if it does not in time."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise MomentsError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {self.target} within {timeout} s"
            ) from None

    def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        fn = getattr(self._stub, method)
        try:
            return fn(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, method) from None

    # ---------------------------------------------------------------------------------------- calls

    def search(
        self,
        text: str | None = None,
        image: bytes | str | os.PathLike[str] | None = None,
        top_k: int = 10,
        *,
        video_ids: Sequence[str] | str | None = None,
        start_s: float | None = None,
        end_s: float | None = None,
        where: Where | None = None,
        merge_adjacent: bool = False,
        group_by_video: bool = False,
        include_thumbnails: bool = False,
        min_score: float | None = None,
        merge_tolerance: float | None = None,
        page_token: str | None = None,
        complete_only: bool = False,
        image_weight: float | None = None,
        parts: Sequence[tuple[str | bytes | os.PathLike[str], float]] | None = None,
        any_texts: Sequence[str] = (),
        negative_texts: Sequence[str] = (),
        max_per_video: int = 0,
        relative_score: float | None = None,
        negative_weight: float | None = None,
        negative_margin: float | None = None,
        timeout: float | None = None,
    ) -> SearchResult:
        """The moments that best match ``text`` or ``image`` (JPEG/PNG bytes or a path), best first.

        ``merge_adjacent`` joins a video's hits whose sampling windows touch into one moment, while each frame
        scores within ``merge_tolerance`` (server default 0.05) of the moment's best; ``group_by_video`` keeps
        each video's best moment only.

        ``where`` filters on the videos' metadata: ``{"camera": "north", "floor": (">=", 2),
        "site": ["a", "b"]}`` or ``[("floor", ">=", 1), ("floor", "<", 3)]``.

        Composed queries (every score is built from cosine similarities of L2-normalised vectors, see the
        proto's SearchRequest): ``text`` and ``image`` together search for their weighted sum, the image
        weighing ``image_weight`` (default 0.5) and the text the rest; ``parts=[("a red circle", 1.0),
        (Path("q.png"), 0.5)]`` is the general form (a ``str`` is a text, bytes or a path an image).
        ``any_texts`` are alternatives (a frame scores its best match), ``negative_texts`` push down the
        frames close to them (``negative_weight``, default 1, ``negative_margin``, default 0).
        ``max_per_video`` bounds each video's moments in the results (0 = no limit); ``relative_score``
        keeps the hits within that distance of the best one.
        """
        request = c.search_request(
            text,
            image,
            top_k,
            video_ids,
            start_s,
            end_s,
            where,
            merge_adjacent,
            group_by_video,
            include_thumbnails,
            min_score,
            page_token,
            merge_tolerance,
            complete_only,
            c.Composed(
                image_weight,
                parts,
                any_texts,
                negative_texts,
                max_per_video,
                relative_score,
                negative_weight,
                negative_margin,
            ),
        )
        return SearchResult.from_proto(self._call("Search", request, timeout))

    def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[bytes | str | os.PathLike[str]] | None = None,
        *,
        timeout: float | None = None,
    ) -> Embeddings:
        """The model's L2-normalised vectors for texts or for images (one kind per call)."""
        return Embeddings.from_proto(self._call("Embed", c.embed_request(texts, images), timeout))

    def get_video(self, video_id: str, *, timeout: float | None = None) -> Video:
        """One video's record; MomentsError(NOT_FOUND) when the id is unknown."""
        return Video.from_proto(self._call("GetVideo", pb.GetVideoRequest(video_id=video_id), timeout))

    def list_videos_page(
        self, page_size: int = 100, page_token: str | None = None, *, timeout: float | None = None
    ) -> VideoPage:
        r = self._call("ListVideos", pb.ListVideosRequest(page_size=page_size, page_token=page_token or ""), timeout)
        return VideoPage([Video.from_proto(v) for v in r.videos], r.next_page_token or None, r.trimmed)

    def list_videos(self, page_size: int = 100, *, timeout: float | None = None) -> Iterator[Video]:
        """Every stored video in ingest order, fetching pages of ``page_size`` as the iteration goes."""
        token: str | None = None
        while True:
            page = self.list_videos_page(page_size, token, timeout=timeout)
            yield from page.videos
            if not page.next_page_token:
                return
            token = page.next_page_token

    def delete_video(self, video_id: str, *, timeout: float | None = None) -> int:
        """Delete a video with its clips, frame embeddings and thumbnails; returns the frames removed."""
        return int(self._call("DeleteVideo", pb.DeleteVideoRequest(video_id=video_id), timeout).frames_deleted)

    def info(self, *, timeout: float | None = None) -> Info:
        """The serving model, descriptor set, store kind and limits."""
        return Info.from_proto(self._call("Info", pb.InfoRequest(), timeout))

    # ---------------------------------------------------------------------------------------- ingest

    def ingest_events(
        self,
        source: c.Source,
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        fps: float = 1.0,
        max_frames: int = 0,
        keyframes: bool = False,
        live: bool = False,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        sha256: str | bool | None = None,
        filename: str | None = None,
        chunk_size: int = c.CHUNK_SIZE,
        timeout: float | None = None,
    ) -> Iterator[IngestEvent]:
        """Stream ``source`` (a path, bytes, a binary file or an iterator of bytes) as ``video_id``; yields
        :class:`IngestAccepted`, :class:`IngestProgress` events and finally :class:`IngestDone`.

        The file is opened before the call (an unreadable path raises OSError). Closing the iterator early
        cancels the upload, which leaves nothing of the video on the server. ``keyframes=True`` keeps only
        keyframes (``SamplingOptions.keyframes``: far less decoding, frames as far apart as keyframes).
        ``sha256=True`` hashes a seekable source first so that the server verifies the upload.
        ``live=True`` sends a stream that may never end (INGEST_MODE_LIVE): the server commits it every
        ``segment_s`` seconds of video, reported as :class:`IngestCommitted` events, searchable at once; such a
        call has no deadline unless ``timeout`` is given.
        """
        upload = c.open_upload(source, filename)
        try:
            digest = c.sha256_of(upload) if sha256 is True else (sha256 or None)
            header = c.ingest_header(
                video_id,
                upload.filename,
                metadata,
                fps,
                max_frames,
                replace,
                thumbnails,
                digest,
                upload.size,
                keyframes=keyframes,
                live=live,
                segment_s=segment_s,
            )
        except BaseException:
            upload.close()
            raise
        if upload.aiterable is not None:
            upload.close()
            raise TypeError("an async iterable needs AsyncClient.ingest")
        failure: list[BaseException] = []
        lock = threading.Lock()

        def requests() -> Iterator[pb.IngestRequest]:
            yield pb.IngestRequest(header=header)
            try:
                for chunk in upload.chunks(chunk_size):
                    with lock:
                        upload.sent += len(chunk)
                    yield pb.IngestRequest(chunk=chunk)
            except Exception as e:  # a read error: remember it, end the stream; the call is cancelled below
                failure.append(e)
                raise

        call = self._stub.Ingest(
            requests(), timeout=c.ingest_deadline(self.ingest_timeout, timeout, live), metadata=self._metadata
        )
        try:
            for message in call:
                event = ingest_event(message, video_id, upload.sent, upload.size)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()  # a no-op after the call ended; cancels the upload when the caller stopped early
            upload.close()

    def ingest(
        self,
        source: c.Source,
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        fps: float = 1.0,
        max_frames: int = 0,
        keyframes: bool = False,
        live: bool = False,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        sha256: str | bool | None = None,
        filename: str | None = None,
        chunk_size: int = c.CHUNK_SIZE,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestDone:
        """Like :meth:`ingest_events`, but blocks until the video is stored and returns the summary;
        ``on_progress`` (if given) receives every event as it arrives."""
        done: IngestDone | None = None
        for event in self.ingest_events(
            source,
            video_id,
            metadata,
            fps=fps,
            max_frames=max_frames,
            keyframes=keyframes,
            live=live,
            segment_s=segment_s,
            replace=replace,
            thumbnails=thumbnails,
            sha256=sha256,
            filename=filename,
            chunk_size=chunk_size,
            timeout=timeout,
        ):
            if on_progress is not None:
                on_progress(event)
            if isinstance(event, IngestDone):
                done = event
        if done is None:
            raise MomentsError(grpc.StatusCode.UNKNOWN, "the ingest stream ended without a done event", "Ingest")
        return done

    def ingest_frames_events(
        self,
        frames: Iterable[c.FrameItem],
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        filename: str = "",
        resume_upload_id: str | None = None,
        resume_offset: int = 0,
        timeout: float | None = None,
    ) -> Iterator[IngestEvent]:
        """Stream pictures sampled by the caller (INGEST_MODE_FRAMES): ``frames`` yields :class:`Frame` or
        ``(jpeg_or_png_bytes, time_s)`` with strictly increasing times, each standing for the time until the
        next one; the iterator may never end. The server commits every ``segment_s`` seconds (reported as
        :class:`IngestCommitted`, searchable at once; ``frames`` is the count committed). After a break,
        resume with ``resume_upload_id`` (:attr:`IngestAccepted.upload_id`) and ``resume_offset`` = frames
        committed, sending the frames from that one on. No deadline unless ``timeout`` is given."""
        header = c.frames_header(
            video_id, filename, metadata, segment_s, replace, thumbnails, resume_upload_id, resume_offset
        )
        failure: list[BaseException] = []
        sent = [0]

        def requests() -> Iterator[pb.IngestRequest]:
            yield pb.IngestRequest(header=header)
            try:
                for item in frames:
                    request = c.frame_request(item)
                    sent[0] += len(request.frame.image)
                    yield request
            except Exception as e:  # the caller's iterator failed: the call is cancelled below
                failure.append(e)
                raise

        call = self._stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)
        try:
            for message in call:
                event = ingest_event(message, video_id, sent[0], None)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()

    def ingest_frames(
        self,
        frames: Iterable[c.FrameItem],
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        filename: str = "",
        resume_upload_id: str | None = None,
        resume_offset: int = 0,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestDone:
        """Like :meth:`ingest_frames_events`, but blocks until the stream ends and returns the summary;
        ``on_progress`` (if given) receives every event as it arrives."""
        done: IngestDone | None = None
        for event in self.ingest_frames_events(
            frames,
            video_id,
            metadata,
            segment_s=segment_s,
            replace=replace,
            thumbnails=thumbnails,
            filename=filename,
            resume_upload_id=resume_upload_id,
            resume_offset=resume_offset,
            timeout=timeout,
        ):
            if on_progress is not None:
                on_progress(event)
            if isinstance(event, IngestDone):
                done = event
        if done is None:
            raise MomentsError(grpc.StatusCode.UNKNOWN, "the ingest stream ended without a done event", "Ingest")
        return done

    # ---------------------------------------------------------------------------------------- pull

    def ingest_url_events(
        self,
        url: str,
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        fps: float = 1.0,
        keyframes: bool = False,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        timeout: float | None = None,
    ) -> Generator[IngestEvent, None, None]:
        """Have the server pull ``url`` (``rtsp://``, ``rtsps://``, ``http(s)://`` e.g. an HLS playlist,
        ``udp://`` MPEG-TS) as the live video ``video_id``; yields :class:`IngestAccepted`, :class:`IngestPull`
        (what the server has read, reconnects), :class:`IngestCommitted` and finally :class:`IngestDone`.

        The server reconnects when the source breaks and ends the video "complete" when the source ends, on
        :meth:`stop_ingest`, or when this iterator is closed early (which cancels the call); no deadline
        unless ``timeout`` is given."""
        header = c.pull_header(url, video_id, metadata, fps, segment_s, replace, thumbnails, keyframes)
        call = self._stub.Ingest(iter([pb.IngestRequest(header=header)]), timeout=timeout, metadata=self._metadata)
        try:
            for message in call:
                event = ingest_event(message, video_id, 0, None)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()

    def ingest_url(
        self,
        url: str,
        video_id: str,
        metadata: Mapping[str, Any] | None = None,
        *,
        fps: float = 1.0,
        keyframes: bool = False,
        segment_s: float = 0.0,
        replace: bool = False,
        thumbnails: bool = False,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> IngestDone:
        """Like :meth:`ingest_url_events`, but blocks until the pull ends and returns the summary."""
        done: IngestDone | None = None
        for event in self.ingest_url_events(
            url,
            video_id,
            metadata,
            fps=fps,
            keyframes=keyframes,
            segment_s=segment_s,
            replace=replace,
            thumbnails=thumbnails,
            timeout=timeout,
        ):
            if on_progress is not None:
                on_progress(event)
            if isinstance(event, IngestDone):
                done = event
        if done is None:
            raise MomentsError(grpc.StatusCode.UNKNOWN, "the pull ended without a done event", "Ingest")
        return done

    def stop_ingest(self, video_id: str, *, timeout: float | None = None) -> Video | None:
        """End the running live ingest (a pull or a stream) of ``video_id`` cleanly: the video becomes
        "complete"; returns it once its ingest has ended (None when nothing had been committed).
        MomentsError(NOT_FOUND) when no ingest of that id runs."""
        r = self._call("StopIngest", pb.StopIngestRequest(video_id=video_id), timeout)
        return Video.from_proto(r.video) if r.HasField("video") else None
