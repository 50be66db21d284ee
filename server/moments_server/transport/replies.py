"""The core's results (service/replies.py, service/events.py) → protobuf responses.

Every response is sized to the server's response limit here: a Search or ListVideos page that would pass
it is trimmed (`trimmed`, and its next page starts at the first item left out); an item alone over it is
RESOURCE_EXHAUSTED with what to change.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.model import VideoRecord
from moments_server.errors import ResourceExhausted
from moments_server.service import events
from moments_server.service.replies import Embeddings, SearchPage, ServerInfo, Timing, VideoPage
from moments_server.transport.sizing import fit


def value(v: Any) -> pb.Value:
    if isinstance(v, bool):
        return pb.Value(bool_value=v)
    if isinstance(v, int | float):
        return pb.Value(number_value=float(v))
    if isinstance(v, dict) and "_date" in v:
        return pb.Value(date_value=str(v["_date"]))
    return pb.Value(string_value=str(v))


def fill_metadata(target: Any, metadata: Mapping[str, Any]) -> None:
    for key, v in metadata.items():
        target[key].CopyFrom(value(v))


def video(v: VideoRecord) -> pb.Video:
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


def _timing(t: Timing) -> pb.Timing:
    return pb.Timing(queue_ms=t.queue_ms, inference_ms=t.inference_ms, store_ms=t.store_ms, total_ms=t.total_ms)


R = TypeVar("R", pb.SearchResponse, pb.ListVideosResponse)


def _sized(response: R, field: str, page: SearchPage | VideoPage, limit: int, alone: str) -> R:
    """The page trimmed to `limit` bytes (`trimmed`, and the next page starts at the first item left out);
    an item alone over it is RESOURCE_EXHAUSTED with `alone`."""
    items = len(getattr(response, field))
    kept = fit(response, field, limit)
    if items and kept == 0:
        raise ResourceExhausted(alone)
    response.trimmed = kept < items
    if response.trimmed or page.more:
        response.next_page_token = page.token_after(kept)
    return response


def search_response(page: SearchPage, limit: int) -> pb.SearchResponse:
    response = pb.SearchResponse(timing=_timing(page.timing))
    for m in page.moments:
        out = response.moments.add(
            video_id=m.video_id, start_s=m.start_s, end_s=m.end_s, best_frame_s=m.best_frame_s, score=m.score
        )
        fill_metadata(out.metadata, m.metadata)
        if m.thumbnail:
            out.thumbnail_jpeg = m.thumbnail
    alone = (
        f"one moment alone is over the server's response limit ({limit} bytes); "
        "search without include_thumbnails, or ask the operator about the video's metadata"
    )
    return _sized(response, "moments", page, limit, alone)


def video_response(v: VideoRecord, limit: int) -> pb.Video:
    message = video(v)
    if message.ByteSize() > limit:
        raise ResourceExhausted(
            f"video {v.video_id!r} is {message.ByteSize()} bytes with its metadata, over the server's response "
            f"limit of {limit}; re-ingest it with less metadata (replace)"
        )
    return message


def list_response(page: VideoPage, limit: int) -> pb.ListVideosResponse:
    response = pb.ListVideosResponse(videos=[video(v) for v in page.videos])
    alone = (
        f"the video at position {page.offset} alone is over the server's response limit "
        f"({limit} bytes); re-ingest it with less metadata (replace)"
    )
    return _sized(response, "videos", page, limit, alone)


def embed_response(e: Embeddings) -> pb.EmbedResponse:
    response = pb.EmbedResponse(dimensions=e.dimensions, model=e.model, timing=_timing(e.timing))
    for vec in e.vectors:
        response.embeddings.add().values.extend(vec.tolist())
    return response


def info_response(info: ServerInfo) -> pb.InfoResponse:
    m = info.model
    limits = pb.Limits()
    for name, bound in info.limits.items():  # named as Limits' fields
        setattr(limits, name, bound)
    return pb.InfoResponse(
        model=pb.ModelInfo(
            name=m.name,
            pretrained=m.pretrained,
            dimensions=m.dimensions,
            image_size=m.image_size,
            context_length=m.context_length,
            precision=m.precision,
            provider=m.provider,
            fingerprint=m.fingerprint,
            fused=m.fused,
            text_buckets=m.text_buckets,
            image_buckets=m.image_buckets,
            cuda_graphs=m.cuda_graphs,
        ),
        descriptor_set=info.descriptor_set,
        store=info.store,
        limits=limits,
        version=info.version,
    )


def stop_response(v: VideoRecord | None) -> pb.StopIngestResponse:
    return pb.StopIngestResponse(video=video(v)) if v is not None else pb.StopIngestResponse()


def ingest_event(e: events.IngestEvent) -> pb.IngestEvent:
    if isinstance(e, events.Progress):
        return pb.IngestEvent(
            progress=pb.IngestProgress(
                bytes_received=e.bytes_received,
                frames_decoded=e.frames_decoded,
                frames_embedded=e.frames_embedded,
                frames_stored=e.frames_stored,
            )
        )
    if isinstance(e, events.Accepted):
        return pb.IngestEvent(
            accepted=pb.IngestAccepted(
                video_id=e.video_id, replacing=e.replacing, upload_id=e.upload_id, offset=e.offset, media_s=e.media_s
            )
        )
    if isinstance(e, events.Committed):
        return pb.IngestEvent(
            committed=pb.IngestCommitted(bytes=e.bytes, media_s=e.media_s, frames=e.frames, segments=e.segments)
        )
    if isinstance(e, events.PullState):
        return pb.IngestEvent(
            pull=pb.IngestPull(media_s=e.media_s, reconnects=e.reconnects, error=e.error, retry_in_s=e.retry_in_s)
        )
    t = e.timings
    timings = pb.IngestTimings(
        receive_s=t.receive_s, decode_s=t.decode_s, embed_s=t.embed_s, store_s=t.store_s, total_s=t.total_s
    )
    return pb.IngestEvent(done=pb.IngestDone(video=video(e.video), frames=e.frames, timings=timings))
