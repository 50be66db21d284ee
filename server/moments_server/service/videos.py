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
from moments_server.errors import InvalidArgument, NotFound, ResourceExhausted
from moments_server.inference.embedder import Embedder
from moments_server.pictures import check_image
from moments_server.service.sizing import fit
from moments_server.service.values import fill_metadata

VERSION = "0.1.0"


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
        shots=v.shots,
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
        message = video_message(video)
        if message.ByteSize() > self.settings.max_response_bytes:
            raise ResourceExhausted(
                f"video {video_id!r} is {message.ByteSize()} bytes with its metadata, over the server's response "
                f"limit of {self.settings.max_response_bytes}; re-ingest it with less metadata (replace)"
            )
        return message

    async def list(self, request: pb.ListVideosRequest) -> pb.ListVideosResponse:
        size = request.page_size or self.settings.default_page_size
        if size > self.settings.max_page_size:
            raise InvalidArgument(f"page_size must be at most {self.settings.max_page_size}")
        offset = 0
        if request.page_token:
            try:
                offset = int(base64.urlsafe_b64decode(request.page_token.encode()).decode())
            except ValueError as e:
                raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response") from e
            if offset < 0:
                raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response")
        videos, more = await self._call(self.catalog.list_videos, offset, size)
        response = pb.ListVideosResponse(videos=[video_message(v) for v in videos])
        kept = fit(response, "videos", self.settings.max_response_bytes)
        if videos and kept == 0:
            raise ResourceExhausted(
                f"the video at position {offset} alone is over the server's response limit "
                f"({self.settings.max_response_bytes} bytes); re-ingest it with less metadata (replace)"
            )
        if kept < len(videos):
            response.trimmed = True
            response.next_page_token = base64.urlsafe_b64encode(str(offset + kept).encode()).decode()
        elif more:
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
        for i, text in enumerate(request.texts):
            if len(text) > self.settings.max_query_chars:
                raise InvalidArgument(f"texts[{i}] has {len(text)} characters; at most {self.settings.max_query_chars}")
        for i, image in enumerate(request.images):
            check_image(image, self.settings.max_image_bytes, self.settings.max_image_pixels, f"images[{i}]")
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
                text_max_batch=self.embedder.text_max_batch,
                image_max_batch=self.embedder.image_max_batch,
                max_fps=s.max_fps,
                max_frames=s.max_frames,
                max_metadata_keys=s.max_metadata_keys,
                max_metadata_key_chars=s.max_metadata_key_chars,
                max_metadata_value_bytes=s.max_metadata_value_bytes,
                max_metadata_bytes=s.max_metadata_bytes,
                max_query_chars=s.max_query_chars,
                max_image_bytes=s.max_image_bytes,
                max_image_pixels=s.max_image_pixels,
                max_video_pixels=s.max_video_pixels,
                max_video_duration_s=s.max_video_duration_s,
                max_response_bytes=s.max_response_bytes,
                max_concurrent_ingests=s.max_concurrent_ingests,
                max_message_bytes=s.max_message_bytes,
                live_segment_s=s.live_segment_s,
                live_segment_min_s=s.live_segment_min_s,
                live_segment_max_s=s.live_segment_max_s,
                max_query_parts=s.max_query_parts,
                upload_ttl_s=s.upload_ttl_s,
                max_stored_video_bytes=s.max_stored_video_bytes,
                pull_retries=s.pull_retries,
                pull_timeout_s=s.pull_timeout_s,
            ),
            version=VERSION,
        )
