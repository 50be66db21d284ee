"""The asyncio Moments client (grpc.aio): the same methods as :class:`moments_client.Client`, awaitable.

>>> async with AsyncClient("127.0.0.1:50051") as client:
...     result = await client.search("a red circle")
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
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

__all__ = ["AsyncClient"]


class AsyncClient:
    """A grpc.aio connection to a Moments server; create and use it inside one event loop."""

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
            grpc.aio.secure_channel(target, creds, options=opts)
            if creds
            else grpc.aio.insecure_channel(target, options=opts)
        )
        self._stub = pb_grpc.VideoSearchStub(self._channel)
        self._metadata = c.call_metadata(token, metadata)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def wait_ready(self, timeout: float = 10.0) -> None:
        try:
            await asyncio.wait_for(self._channel.channel_ready(), timeout)
        except TimeoutError:
            raise MomentsError(
                grpc.StatusCode.UNAVAILABLE, f"could not connect to {self.target} within {timeout} s"
            ) from None

    async def _call(self, method: str, request: Any, timeout: float | None) -> Any:
        fn = getattr(self._stub, method)
        try:
            return await fn(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, method) from None

    async def search(
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
        """See :meth:`moments_client.Client.search`."""
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
        return SearchResult.from_proto(await self._call("Search", request, timeout))

    async def embed(
        self,
        texts: Sequence[str] | None = None,
        images: Sequence[bytes | str | os.PathLike[str]] | None = None,
        *,
        timeout: float | None = None,
    ) -> Embeddings:
        return Embeddings.from_proto(await self._call("Embed", c.embed_request(texts, images), timeout))

    async def get_video(self, video_id: str, *, timeout: float | None = None) -> Video:
        return Video.from_proto(await self._call("GetVideo", pb.GetVideoRequest(video_id=video_id), timeout))

    async def list_videos_page(
        self, page_size: int = 100, page_token: str | None = None, *, timeout: float | None = None
    ) -> VideoPage:
        request = pb.ListVideosRequest(page_size=page_size, page_token=page_token or "")
        r = await self._call("ListVideos", request, timeout)
        return VideoPage([Video.from_proto(v) for v in r.videos], r.next_page_token or None, r.trimmed)

    async def list_videos(self, page_size: int = 100, *, timeout: float | None = None) -> AsyncIterator[Video]:
        token: str | None = None
        while True:
            page = await self.list_videos_page(page_size, token, timeout=timeout)
            for video in page.videos:
                yield video
            if not page.next_page_token:
                return
            token = page.next_page_token

    async def delete_video(self, video_id: str, *, timeout: float | None = None) -> int:
        r = await self._call("DeleteVideo", pb.DeleteVideoRequest(video_id=video_id), timeout)
        return int(r.frames_deleted)

    async def info(self, *, timeout: float | None = None) -> Info:
        return Info.from_proto(await self._call("Info", pb.InfoRequest(), timeout))

    async def ingest_events(
        self,
        source: c.AsyncSource,
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
    ) -> AsyncIterator[IngestEvent]:
        """See :meth:`moments_client.Client.ingest_events`; also takes an async iterable of bytes. Files are
        read in a worker thread, so the event loop never blocks on disk."""
        upload = c.open_upload(source, filename)
        try:
            digest = (await asyncio.to_thread(c.sha256_of, upload)) if sha256 is True else (sha256 or None)
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
        failure: list[BaseException] = []

        async def requests() -> AsyncIterator[pb.IngestRequest]:
            yield pb.IngestRequest(header=header)
            try:
                if upload.aiterable is not None:
                    async for piece in upload.aiterable:
                        for chunk in c.split(piece, chunk_size):
                            upload.sent += len(chunk)
                            yield pb.IngestRequest(chunk=chunk)
                else:
                    chunks = upload.chunks(chunk_size)
                    while chunk := await asyncio.to_thread(next, chunks, b""):
                        upload.sent += len(chunk)
                        yield pb.IngestRequest(chunk=chunk)
            except Exception as e:
                failure.append(e)
                raise

        call = self._stub.Ingest(
            requests(), timeout=c.ingest_deadline(self.ingest_timeout, timeout, live), metadata=self._metadata
        )
        try:
            async for message in call:
                event = ingest_event(message, video_id, upload.sent, upload.size)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()
            upload.close()

    async def ingest(
        self,
        source: c.AsyncSource,
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
        on_progress: Callable[[IngestEvent], None] | None = None,
    ) -> IngestDone:
        """Upload and wait until the video is stored; ``on_progress`` receives every event."""
        done: IngestDone | None = None
        async for event in self.ingest_events(
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

    async def ingest_frames_events(
        self,
        frames: Iterable[c.FrameItem] | AsyncIterable[c.FrameItem],
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
    ) -> AsyncIterator[IngestEvent]:
        """See :meth:`moments_client.Client.ingest_frames_events`; also takes an async iterable."""
        header = c.frames_header(
            video_id, filename, metadata, segment_s, replace, thumbnails, resume_upload_id, resume_offset
        )
        failure: list[BaseException] = []
        sent = [0]

        async def requests() -> AsyncIterator[pb.IngestRequest]:
            yield pb.IngestRequest(header=header)
            try:
                if isinstance(frames, AsyncIterable):
                    async for item in frames:
                        request = c.frame_request(item)
                        sent[0] += len(request.frame.image)
                        yield request
                else:
                    for item in frames:
                        request = c.frame_request(item)
                        sent[0] += len(request.frame.image)
                        yield request
            except Exception as e:
                failure.append(e)
                raise

        call = self._stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for message in call:
                event = ingest_event(message, video_id, sent[0], None)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            if failure:
                raise failure[0] from None
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()

    async def ingest_frames(
        self,
        frames: Iterable[c.FrameItem] | AsyncIterable[c.FrameItem],
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
        on_progress: Callable[[IngestEvent], None] | None = None,
    ) -> IngestDone:
        """Stream frames and wait until the stream ends; ``on_progress`` receives every event."""
        done: IngestDone | None = None
        async for event in self.ingest_frames_events(
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

    async def ingest_url_events(
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
    ) -> AsyncIterator[IngestEvent]:
        """Have the server pull ``url`` as the live video ``video_id`` (see :meth:`Client.ingest_url_events`)."""
        header = c.pull_header(url, video_id, metadata, fps, segment_s, replace, thumbnails, keyframes)

        async def requests() -> AsyncIterator[pb.IngestRequest]:
            yield pb.IngestRequest(header=header)

        call = self._stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)
        try:
            async for message in call:
                event = ingest_event(message, video_id, 0, None)
                if event is not None:
                    yield event
        except grpc.RpcError as e:
            raise MomentsError.from_rpc_error(e, "Ingest") from None
        finally:
            call.cancel()

    async def ingest_url(
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
        on_progress: Callable[[IngestEvent], None] | None = None,
    ) -> IngestDone:
        """Pull ``url`` and wait until the pull ends; ``on_progress`` receives every event."""
        done: IngestDone | None = None
        async for event in self.ingest_url_events(
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

    async def stop_ingest(self, video_id: str, *, timeout: float | None = None) -> Video | None:
        """End the running live ingest of ``video_id`` cleanly (see :meth:`Client.stop_ingest`)."""
        r = await self._call("StopIngest", pb.StopIngestRequest(video_id=video_id), timeout)
        return Video.from_proto(r.video) if r.HasField("video") else None
