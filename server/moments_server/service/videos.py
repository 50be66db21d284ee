"""Housekeeping calls: GetVideo, ListVideos, DeleteVideo, Embed and Info."""

from __future__ import annotations

import asyncio
import base64
import time
from concurrent.futures import Executor

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import VIDEO_ID, VideoRecord
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, NotFound
from moments_server.inference.embedder import Embedder
from moments_server.service.values import fill_metadata

VERSION = "0.1.0"
DEFAULT_PAGE = 100
MAX_PAGE = 1000


def video_message(v: VideoRecord) -> pb.Video:
    msg = pb.Video(
        video_id=v.video_id,
        filename=v.filename,
        duration_s=v.duration_s,
        fps=v.fps,
        width=v.width,
        height=v.height,
        codec=v.codec,
        ingested_at=v.ingested_at,
        frames=v.frames,
        size_bytes=v.size_bytes,
        state=v.state,
    )
    fill_metadata(msg.metadata, v.metadata)
    return msg


def _check_id(video_id: str) -> None:
    if not VIDEO_ID.match(video_id):
        raise InvalidArgument("video_id must be 1-128 characters of [A-Za-z0-9._:-]")


class VideoService:
    def __init__(
        self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor, store_kind: str
    ) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor
        self.store_kind = store_kind

    async def _call(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def get(self, video_id: str) -> pb.Video:
        _check_id(video_id)
        video = await self._call(self.catalog.get_video, video_id)
        if video is None:
            raise NotFound(f"no video with id {video_id!r}")
        return video_message(video)

    async def list(self, request: pb.ListVideosRequest) -> pb.ListVideosResponse:
        size = request.page_size or DEFAULT_PAGE
        if size > MAX_PAGE:
            raise InvalidArgument(f"page_size must be at most {MAX_PAGE}")
        offset = 0
        if request.page_token:
            try:
                offset = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
            except ValueError as e:
                raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response") from e
        videos, more = await self._call(self.catalog.list_videos, offset, size)
        response = pb.ListVideosResponse(videos=[video_message(v) for v in videos])
        if more:
            response.next_page_token = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        return response

    async def delete(self, video_id: str) -> pb.DeleteVideoResponse:
        _check_id(video_id)
        videos, frames = await self._call(self.catalog.delete_video, video_id)
        if videos == 0:
            raise NotFound(f"no video with id {video_id!r}")
        return pb.DeleteVideoResponse(frames_deleted=frames)

    async def embed(self, request: pb.EmbedRequest, deadline: float | None) -> pb.EmbedResponse:
        started = time.perf_counter()
        if request.texts and request.images:
            raise InvalidArgument("send texts or images, not both")
        n = len(request.texts) + len(request.images)
        if n == 0:
            raise InvalidArgument("nothing to embed: set texts or images")
        if n > self.settings.max_embed_items:
            raise InvalidArgument(f"at most {self.settings.max_embed_items} items per call, got {n}")
        if request.texts:
            embedded = await self.embedder.embed_texts(list(request.texts), deadline=deadline)
        else:
            embedded = await self.embedder.embed_images(list(request.images), deadline=deadline)
        response = pb.EmbedResponse(dimensions=self.embedder.dim, model=self.embedder.manifest.name)
        for vec in embedded.vectors:
            response.embeddings.add().values.extend(vec.tolist())
        response.timing.queue_ms = embedded.queue_s * 1e3
        response.timing.inference_ms = embedded.inference_s * 1e3
        response.timing.total_ms = (time.perf_counter() - started) * 1e3
        return response

    def info(self) -> pb.InfoResponse:
        m = self.embedder.manifest
        s = self.settings
        return pb.InfoResponse(
            model=pb.ModelInfo(
                name=m.name,
                pretrained=m.pretrained,
                dimensions=m.embed_dim,
                image_size=m.image_size,
                context_length=m.context_length,
                precision=self.embedder.image_tower.precision,
                provider=self.embedder.image_tower.provider,
                fingerprint=m.fingerprint,
            ),
            descriptor_set=m.descriptor_set,
            store=self.store_kind,
            limits=pb.Limits(
                max_top_k=s.max_top_k,
                max_upload_bytes=s.max_upload_bytes,
                text_max_batch=self.embedder.text_batcher.max_batch,
                image_max_batch=self.embedder.image_batcher.max_batch,
                max_fps=s.max_fps,
                max_frames=s.max_frames,
                live_segment_s=s.live_segment_s,
                live_segment_min_s=s.live_segment_min_s,
                live_segment_max_s=s.live_segment_max_s,
            ),
            version=VERSION,
        )
