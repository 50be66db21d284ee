"""The moments.v1.VideoSearch servicer: each call's protobuf converted for the core (transport/requests.py), the
core's answer converted back (transport/replies.py); the work is in moments_server.service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, StreamBroken
from moments_server.metrics import INGEST_ENDS
from moments_server.service.events import IngestEvent
from moments_server.service.ingest import IngestService
from moments_server.service.requests import FrameIn
from moments_server.service.search import SearchService
from moments_server.service.videos import VideoService
from moments_server.transport import replies, requests
from moments_server.transport.status import deadline_of, rpc


class VideoSearchServicer(pb_grpc.VideoSearchServicer):
    def __init__(self, ingest: IngestService, search: SearchService, videos: VideoService, settings: Settings) -> None:
        self._ingest = ingest
        self._search = search
        self._videos = videos
        self._limit = settings.max_response_bytes
        self.retry_after_ms = settings.retry_after_ms  # status.rpc's retry pushback
        self._settle_s = settings.ingest_end_settle_s

    @rpc("Ingest")
    async def Ingest(
        self, request_iterator: AsyncIterator[pb.IngestRequest], context: grpc.aio.ServicerContext
    ) -> None:
        messages = request_iterator.__aiter__()
        try:
            first = await messages.__anext__()
        except StopAsyncIteration:
            raise InvalidArgument("the stream is empty: send an IngestHeader first, then the video's chunks") from None
        if first.WhichOneof("payload") != "header":
            raise InvalidArgument("the first message must be the IngestHeader, then the video's chunks")

        header = requests.ingest_spec(first.header)
        want = "frame" if first.header.mode == pb.INGEST_MODE_FRAMES else "chunk"
        upload = first.header.mode == pb.INGEST_MODE_UNSPECIFIED

        async def payloads() -> AsyncIterator[pb.IngestRequest]:
            """The chunks (frames) until the stream is complete; what the core is given ends only then."""
            async for message in messages:
                kind = message.WhichOneof("payload")
                if kind == "end":  # complete by the sender's word: nothing may follow it
                    await after_end()
                    INGEST_ENDS.labels("marker").inc()
                    return
                if kind == "header":
                    raise InvalidArgument(f"a second IngestHeader arrived; send one header, then only {want}s")
                if kind is not None and kind != want:
                    raise InvalidArgument(
                        f"a {kind} arrived in a stream of {want}s: frames are for INGEST_MODE_FRAMES, "
                        "chunks for the other modes"
                    )
                if kind is not None:
                    yield message
            if first.header.sends_end:  # the sender ends with IngestEnd: without it the call broke
                INGEST_ENDS.labels("missing").inc()
                # an error of the stream, as a malformed message is: LIVE/FRAMES interrupted and resumable, an
                # upload not committed; the caller, if it still listens, hears ABORTED
                raise StreamBroken(
                    "the request stream ended without IngestEnd though the header set sends_end: the stream broke, "
                    + (
                        "nothing of the upload was committed; send it again"
                        if upload
                        else "what was committed stays and the video is interrupted; resume it (resume_upload_id)"
                    )
                )
            # No IngestEnd (a sender that predates it). grpc.aio ends a request stream alike when the sender
            # closes it and when the call is cancelled (its _receive_message merges a failed read into
            # end-of-stream), and cancels the handler only a moment later: wait that long before taking the
            # requests for complete, so that a broken link is not committed as a finished stream (a held last
            # frame placed, an upload committed). A cancellation raises CancelledError here.
            await asyncio.sleep(self._settle_s)
            if context.cancelled():
                raise asyncio.CancelledError()
            INGEST_ENDS.labels("settle").inc()

        async def after_end() -> None:
            """The sender closes its side after IngestEnd (or the call ends): any message is a broken stream."""
            try:
                extra = await messages.__anext__()
            except StopAsyncIteration:
                return
            raise InvalidArgument(
                f"a {extra.WhichOneof('payload') or 'message'} arrived after IngestEnd: IngestEnd is the stream's "
                f"last message (send it once, after the last {want}, then close the stream)"
            )

        async def chunks() -> AsyncIterator[bytes]:
            async for message in payloads():
                if message.chunk:
                    yield message.chunk

        # one write at a time: grpc.aio fails a write that overlaps another (ExecuteBatchError), and a live
        # stream's events come from two tasks (its receiver's progress, its commits)
        writing = asyncio.Lock()

        async def emit(event: IngestEvent) -> None:
            message = replies.ingest_event(event)  # now: the core may change the event once this returns
            async with writing:
                await context.write(message)

        async def frames() -> AsyncIterator[FrameIn]:
            async for message in payloads():
                yield requests.frame(message.frame)

        if want == "frame":
            await self._ingest.ingest_frames(header, frames(), emit)
        else:
            await self._ingest.ingest(header, chunks(), emit)

    @rpc("StopIngest")
    async def StopIngest(
        self, request: pb.StopIngestRequest, context: grpc.aio.ServicerContext
    ) -> pb.StopIngestResponse:
        return replies.stop_response(await self._ingest.stop(request.video_id))

    @rpc("Search")
    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        page = await self._search.search(requests.search_query(request), deadline_of(context))
        return replies.search_response(page, self._limit)

    @rpc("Embed")
    async def Embed(self, request: pb.EmbedRequest, context: grpc.aio.ServicerContext) -> pb.EmbedResponse:
        embedded = await self._videos.embed(list(request.texts), list(request.images), deadline_of(context))
        return replies.embed_response(embedded)

    @rpc("GetVideo")
    async def GetVideo(self, request: pb.GetVideoRequest, context: grpc.aio.ServicerContext) -> pb.Video:
        return replies.video_response(await self._videos.get(request.video_id), self._limit)

    @rpc("ListVideos")
    async def ListVideos(
        self, request: pb.ListVideosRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListVideosResponse:
        page = await self._videos.list(request.page_size, request.page_token)
        return replies.list_response(page, self._limit)

    @rpc("DeleteVideo")
    async def DeleteVideo(
        self, request: pb.DeleteVideoRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteVideoResponse:
        return pb.DeleteVideoResponse(frames_deleted=await self._videos.delete(request.video_id))

    @rpc("Info")
    async def Info(self, request: pb.InfoRequest, context: grpc.aio.ServicerContext) -> pb.InfoResponse:
        return replies.info_response(self._videos.info())
