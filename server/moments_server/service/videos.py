"""Housekeeping calls: GetVideo, ListVideos, DeleteVideo, Embed and Info."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import VIDEO_ID, VideoRecord
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, NotFound
from moments_server.inference.embedder import Embedder, buckets
from moments_server.pictures import check_image
from moments_server.service.replies import (
    Embeddings,
    ModelDescription,
    ServerInfo,
    Timing,
    VideoPage,
    decode_list_token,
)

VERSION = "0.1.0"
T = TypeVar("T")
# Info's Limits that are settings of the same name
SETTING_LIMITS = (
    "max_top_k",
    "max_upload_bytes",
    "max_fps",
    "max_frames",
    "max_metadata_keys",
    "max_metadata_key_chars",
    "max_metadata_value_bytes",
    "max_metadata_bytes",
    "max_query_chars",
    "max_image_bytes",
    "max_image_pixels",
    "max_video_pixels",
    "max_video_duration_s",
    "max_response_bytes",
    "max_concurrent_ingests",
    "max_message_bytes",
    "live_segment_s",
    "live_segment_min_s",
    "live_segment_max_s",
    "max_query_parts",
    "upload_ttl_s",
    "max_stored_video_bytes",
    "max_video_aspect",
    "pull_retries",
    "pull_timeout_s",
)


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

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def get(self, video_id: str) -> VideoRecord:
        _check_id(video_id)
        video = await self._call(self.catalog.get_video, video_id)
        if video is None:
            raise NotFound(f"no video with id {video_id!r}")
        return video

    async def list(self, page_size: int, page_token: str) -> VideoPage:
        size = page_size or self.settings.default_page_size
        if size > self.settings.max_page_size:
            raise InvalidArgument(f"page_size must be at most {self.settings.max_page_size}")
        offset = decode_list_token(page_token) if page_token else 0
        videos, more = await self._call(self.catalog.list_videos, offset, size)
        return VideoPage(videos, offset, more)

    async def delete(self, video_id: str) -> int:
        """-> how many frames were deleted with the video."""
        _check_id(video_id)
        videos, frames = await self._call(self.catalog.delete_video, video_id)
        if videos == 0:
            raise NotFound(f"no video with id {video_id!r}")
        return frames

    async def embed(self, texts: Sequence[str], images: Sequence[bytes], deadline: float | None) -> Embeddings:
        started = time.perf_counter()
        if texts and images:
            raise InvalidArgument("send texts or images, not both")
        n = len(texts) + len(images)
        if n == 0:
            raise InvalidArgument("nothing to embed: set texts or images")
        if n > self.settings.max_embed_items:
            raise InvalidArgument(f"at most {self.settings.max_embed_items} items per call, got {n}")
        for i, text in enumerate(texts):
            if len(text) > self.settings.max_query_chars:
                raise InvalidArgument(f"texts[{i}] has {len(text)} characters; at most {self.settings.max_query_chars}")
        for i, image in enumerate(images):
            check_image(image, self.settings.max_image_bytes, self.settings.max_image_pixels, f"images[{i}]")
        if texts:
            embedded = await self.embedder.embed_texts(texts, deadline=deadline)
        else:
            embedded = await self.embedder.embed_images(images, deadline=deadline)
        timing = Timing(
            queue_ms=embedded.queue_s * 1e3,
            inference_ms=embedded.inference_s * 1e3,
            total_ms=(time.perf_counter() - started) * 1e3,
        )
        return Embeddings(embedded.vectors, self.embedder.dim, self.embedder.manifest.name, timing)

    def info(self) -> ServerInfo:
        m = self.embedder.manifest
        limits: dict[str, int | float] = {name: getattr(self.settings, name) for name in SETTING_LIMITS}
        limits.update(text_max_batch=self.embedder.text_max_batch, image_max_batch=self.embedder.image_max_batch)
        model = ModelDescription(
            name=m.name,
            pretrained=m.pretrained,
            dimensions=m.embed_dim,
            image_size=m.image_size,
            context_length=m.context_length,
            precision=self.embedder.precision,
            provider=self.embedder.provider,
            fingerprint=m.fingerprint,
            fused=self.embedder.fused,
            text_buckets=buckets(self.embedder.text_max_batch),
            image_buckets=buckets(self.embedder.image_max_batch),
            cuda_graphs=self.embedder.cuda_graphs,
        )
        return ServerInfo(model, m.descriptor_set, self.store_kind, limits, VERSION)
