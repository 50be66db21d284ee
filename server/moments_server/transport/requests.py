"""Protobuf requests → the core's request types (service/requests.py).

Only the wire's own shape is checked here: an enum value no version of the API names is refused
(INVALID_ARGUMENT); everything else (limits, ranges, ids) is the core's to check.
"""

from __future__ import annotations

from collections.abc import Mapping

from moments.v1 import moments_pb2 as pb
from moments_server.errors import InvalidArgument
from moments_server.service.requests import (
    Condition,
    Filters,
    FrameIn,
    IngestMode,
    IngestSpec,
    MomentSpan,
    Op,
    QueryPart,
    Sampling,
    SearchOptions,
    SearchQuery,
    Value,
    Windows,
)

_MODES = {
    pb.INGEST_MODE_UNSPECIFIED: IngestMode.UPLOAD,
    pb.INGEST_MODE_LIVE: IngestMode.LIVE,
    pb.INGEST_MODE_FRAMES: IngestMode.FRAMES,
}
_WINDOWS = {pb.WINDOWS_UNSPECIFIED: Windows.DEFAULT, pb.WINDOWS_FIXED: Windows.FIXED, pb.WINDOWS_SHOTS: Windows.SHOTS}
_SPANS = {
    pb.MOMENT_SPAN_UNSPECIFIED: MomentSpan.WINDOW,
    pb.MOMENT_SPAN_WINDOW: MomentSpan.WINDOW,
    pb.MOMENT_SPAN_SHOT: MomentSpan.SHOT,
}
_OPS = {getattr(pb.Condition, op.name): op for op in Op}


def value(v: pb.Value) -> Value:
    kind = v.WhichOneof("kind")
    if kind == "string_value":
        return v.string_value
    if kind == "number_value":
        return v.number_value
    if kind == "bool_value":
        return v.bool_value
    if kind == "date_value":
        return {"_date": v.date_value}
    return None


def metadata(m: Mapping[str, pb.Value]) -> dict[str, Value]:
    return {k: value(v) for k, v in m.items()}


def ingest_spec(header: pb.IngestHeader) -> IngestSpec:
    mode = _MODES.get(header.mode)
    if mode is None:
        raise InvalidArgument(f"header.mode {header.mode} is unknown: UPLOAD (0), LIVE (1) or FRAMES (2)")
    s = header.sampling
    windows = _WINDOWS.get(s.windows)
    if windows is None:
        raise InvalidArgument(f"sampling.windows {s.windows} is unknown: UNSPECIFIED (0), FIXED (1) or SHOTS (2)")
    return IngestSpec(
        video_id=header.video_id,
        filename=header.filename,
        metadata=metadata(header.metadata),
        replace=header.replace,
        sha256=header.sha256,
        thumbnails=header.thumbnails,
        size_bytes=header.size_bytes,
        sampling=Sampling(fps=s.fps, max_frames=s.max_frames, keyframes=s.keyframes, windows=windows),
        mode=mode,
        segment_s=header.segment_s,
        resume_upload_id=header.resume_upload_id,
        resume_offset=header.resume_offset,
        source_url=header.source_url,
    )


def frame(f: pb.IngestFrame) -> FrameIn:
    return FrameIn(image=f.image, time_s=f.time_s)


def _optional(message: object, name: str) -> float | None:
    return getattr(message, name) if message.HasField(name) else None  # type: ignore[attr-defined]


def filters(f: pb.SearchFilters) -> Filters:
    return Filters(
        video_ids=list(f.video_ids),
        start_s=_optional(f, "start_s"),
        end_s=_optional(f, "end_s"),
        conditions=[Condition(c.key, _OPS.get(c.op), [value(v) for v in c.values]) for c in f.conditions],
        complete_only=f.complete_only,
    )


def search_options(o: pb.SearchOptions) -> SearchOptions:
    span = _SPANS.get(o.moment_span)
    if span is None:
        raise InvalidArgument(
            f"options.moment_span {o.moment_span} is unknown: UNSPECIFIED (0), WINDOW (1) or SHOT (2)"
        )
    return SearchOptions(
        merge_adjacent=o.merge_adjacent,
        group_by_video=o.group_by_video,
        include_thumbnails=o.include_thumbnails,
        min_score=_optional(o, "min_score"),
        merge_tolerance=_optional(o, "merge_tolerance"),
        max_per_video=o.max_per_video,
        relative_score=_optional(o, "relative_score"),
        negative_weight=_optional(o, "negative_weight"),
        negative_margin=_optional(o, "negative_margin"),
        moment_span=span,
    )


def _part(p: pb.QueryPart) -> QueryPart:
    kind = p.WhichOneof("query")
    return QueryPart(
        text=p.text if kind == "text" else None, image=p.image if kind == "image" else None, weight=p.weight
    )


def search_query(r: pb.SearchRequest) -> SearchQuery:
    kind = r.WhichOneof("query")
    return SearchQuery(
        text=r.text if kind == "text" else None,
        image=r.image if kind == "image" else None,
        top_k=r.top_k,
        filters=filters(r.filters),
        options=search_options(r.options),
        page_token=r.page_token,
        parts=[_part(p) for p in r.parts],
        any_texts=list(r.any_texts),
        negative_texts=list(r.negative_texts),
    )
