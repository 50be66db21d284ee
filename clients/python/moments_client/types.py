"""Typed results of the Moments API (plain dataclasses, not protobuf messages), and the conversions (the metadata
values and filters: :mod:`moments_client.values`, whose names are importable from here too).

Metadata values are ``str``, ``float``, ``bool`` or :class:`datetime.datetime` (the API's ``date_value``);
ints are sent as numbers and come back as floats.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np

from moments.v1 import moments_pb2 as pb
from moments_client.values import OPERATORS as OPERATORS
from moments_client.values import MetaValue as MetaValue
from moments_client.values import Where as Where
from moments_client.values import conditions as conditions
from moments_client.values import from_value as from_value
from moments_client.values import json_value as json_value
from moments_client.values import metadata_dict as metadata_dict
from moments_client.values import to_value as to_value

__all__ = [
    "OPERATORS",
    "Embeddings",
    "Info",
    "IngestAccepted",
    "IngestCommitted",
    "IngestDone",
    "IngestEvent",
    "IngestProgress",
    "IngestTimings",
    "Limits",
    "MetaValue",
    "ModelInfo",
    "Moment",
    "SearchResult",
    "Timing",
    "Video",
    "VideoPage",
    "Where",
]

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")


def _from_message(cls: type[_T], message: Any, **overrides: Any) -> _T:
    """``cls`` (a dataclass) from the message fields of the same names, but for ``overrides``."""
    values = {f.name: getattr(message, f.name) for f in fields(cls) if f.name not in overrides}
    return cls(**values, **overrides)


# ----------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Timing:
    """Where the time of a call went, in milliseconds (server side)."""

    queue_ms: float = 0.0
    inference_ms: float = 0.0
    store_ms: float = 0.0
    total_ms: float = 0.0

    @classmethod
    def from_proto(cls, t: pb.Timing) -> Timing:
        return _from_message(cls, t)


@dataclass(frozen=True)
class Moment:
    """A matching moment: ``[start_s, end_s]`` of ``video_id``, its best frame and its cosine ``score``."""

    video_id: str
    start_s: float
    end_s: float
    best_frame_s: float
    score: float
    metadata: dict[str, MetaValue] = field(default_factory=dict)
    thumbnail_jpeg: bytes | None = None

    @classmethod
    def from_proto(cls, m: pb.Moment) -> Moment:
        return _from_message(
            cls, m, score=float(m.score), metadata=metadata_dict(m.metadata), thumbnail_jpeg=m.thumbnail_jpeg or None
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "best_frame_s": self.best_frame_s,
            "score": round(self.score, 6),
            "metadata": {k: json_value(v) for k, v in self.metadata.items()},
            "has_thumbnail": self.thumbnail_jpeg is not None,
        }


@dataclass(frozen=True)
class SearchResult:
    """One page of moments, best first. Iterate it, or ask for the next page with ``next_page_token``."""

    moments: list[Moment]
    next_page_token: str | None
    timing: Timing
    # Fewer than top_k because the page would have passed the server's response limit; the token goes on.
    trimmed: bool = False

    def __iter__(self) -> Iterator[Moment]:
        return iter(self.moments)

    def __len__(self) -> int:
        return len(self.moments)

    def __getitem__(self, i: int) -> Moment:
        return self.moments[i]

    @classmethod
    def from_proto(cls, r: pb.SearchResponse) -> SearchResult:
        return cls(
            [Moment.from_proto(m) for m in r.moments],
            r.next_page_token or None,
            Timing.from_proto(r.timing),
            r.trimmed,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "moments": [m.to_json() for m in self.moments],
            "next_page_token": self.next_page_token,
            "trimmed": self.trimmed,
            "timing": vars(self.timing),
        }


@dataclass(frozen=True)
class Video:
    """A stored video's record."""

    video_id: str
    filename: str
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    ingested_at: str
    frames: int
    size_bytes: int
    metadata: dict[str, MetaValue] = field(default_factory=dict)
    #: "complete", "live" (a live stream is being committed) or "interrupted" (its stream broke)
    state: str = "complete"

    @classmethod
    def from_proto(cls, v: pb.Video) -> Video:
        return _from_message(cls, v, metadata=metadata_dict(v.metadata), state=v.state or "complete")

    def to_json(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["metadata"] = {k: json_value(v) for k, v in self.metadata.items()}
        return out


@dataclass(frozen=True)
class VideoPage:
    videos: list[Video]
    next_page_token: str | None
    trimmed: bool = False  # fewer than page_size, to stay within the server's response limit


@dataclass(frozen=True)
class IngestAccepted:
    """The server took the header; ``replacing`` when an existing video will be replaced on success."""

    video_id: str
    replacing: bool
    #: LIVE and FRAMES: the id that resumes this stream, and where it stands (bytes stored, or frames
    #: committed for FRAMES; the media seconds committed).
    upload_id: str = ""
    offset: int = 0
    media_s: float = 0.0


@dataclass(frozen=True)
class Frame:
    """One picture of a FRAMES ingest (:meth:`Client.ingest_frames`): JPEG/PNG bytes and its time in seconds
    from the stream start (strictly increasing)."""

    image: bytes
    time_s: float


@dataclass(frozen=True)
class IngestProgress:
    """Progress of one ingest. ``bytes_sent`` is counted by this client; the rest comes from the server."""

    video_id: str
    bytes_sent: int
    bytes_received: int
    frames_decoded: int
    frames_embedded: int
    frames_stored: int
    #: Total upload size when known (a path or a seekable file), else None.
    total_bytes: int | None = None


@dataclass(frozen=True)
class IngestTimings:
    receive_s: float = 0.0
    decode_s: float = 0.0
    embed_s: float = 0.0
    store_s: float = 0.0
    total_s: float = 0.0


@dataclass(frozen=True)
class IngestDone:
    """The video is stored and searchable."""

    video: Video
    frames: int
    timings: IngestTimings


@dataclass(frozen=True)
class IngestCommitted:
    """A live stream's progress that is durably stored and searchable: bytes stored, media seconds, frames."""

    video_id: str
    bytes: int
    media_s: float
    frames: int
    segments: int


@dataclass(frozen=True)
class IngestPull:
    """A server-side pull's reading of its source: media seconds read (``media_s`` minus the last
    :class:`IngestCommitted`'s is how far commits lag), reconnects so far, and while the source is away, why
    and the seconds until the next try."""

    video_id: str
    media_s: float
    reconnects: int
    error: str = ""
    retry_in_s: float = 0.0


IngestEvent: TypeAlias = IngestAccepted | IngestProgress | IngestCommitted | IngestDone | IngestPull


def ingest_event(event: pb.IngestEvent, video_id: str, bytes_sent: int, total: int | None) -> IngestEvent | None:
    kind = event.WhichOneof("event")
    if kind == "accepted":
        a = event.accepted
        return IngestAccepted(a.video_id, a.replacing, a.upload_id, a.offset, a.media_s)
    if kind == "progress":
        p = event.progress
        return IngestProgress(
            video_id, bytes_sent, p.bytes_received, p.frames_decoded, p.frames_embedded, p.frames_stored, total
        )
    if kind == "committed":
        c = event.committed
        return IngestCommitted(video_id, c.bytes, c.media_s, c.frames, c.segments)
    if kind == "pull":
        u = event.pull
        return IngestPull(video_id, u.media_s, u.reconnects, u.error, u.retry_in_s)
    if kind == "done":
        d = event.done
        return IngestDone(Video.from_proto(d.video), d.frames, _from_message(IngestTimings, d.timings))
    return None  # an event kind newer than this client


@dataclass(frozen=True)
class Embeddings:
    """L2-normalised vectors, one row per input, as a float32 array of shape (n, dimensions)."""

    vectors: np.ndarray
    dimensions: int
    model: str
    timing: Timing

    @classmethod
    def from_proto(cls, r: pb.EmbedResponse) -> Embeddings:
        dims = r.dimensions or (len(r.embeddings[0].values) if r.embeddings else 0)
        vectors = np.array([list(e.values) for e in r.embeddings], dtype=np.float32).reshape(len(r.embeddings), dims)
        return cls(vectors, dims, r.model, Timing.from_proto(r.timing))


@dataclass(frozen=True)
class ModelInfo:
    name: str
    pretrained: str
    dimensions: int
    image_size: int
    context_length: int
    precision: str
    provider: str
    fingerprint: str
    # Empty/False where the server does not report them (older servers).
    fused: bool = False
    text_buckets: tuple[int, ...] = ()  # warmed batch sizes; the last is the tower's max batch
    image_buckets: tuple[int, ...] = ()
    cuda_graphs: bool = False


@dataclass(frozen=True)
class Limits:
    max_top_k: int
    max_upload_bytes: int
    text_max_batch: int
    image_max_batch: int
    max_fps: float
    max_frames: int
    # 0 where the server does not report them (older servers).
    max_metadata_keys: int = 0
    max_metadata_key_chars: int = 0
    max_metadata_value_bytes: int = 0
    max_metadata_bytes: int = 0
    max_query_chars: int = 0
    max_image_bytes: int = 0
    max_image_pixels: int = 0
    max_video_pixels: int = 0
    max_video_duration_s: float = 0.0
    max_response_bytes: int = 0
    max_concurrent_ingests: int = 0
    max_message_bytes: int = 0
    max_query_parts: int = 0
    upload_ttl_s: float = 0.0
    max_stored_video_bytes: int = 0
    max_video_aspect: int = 0


@dataclass(frozen=True)
class Info:
    """The serving model, its descriptor set, the store kind and the server's limits."""

    model: ModelInfo
    descriptor_set: str
    store: str
    limits: Limits
    version: str

    @classmethod
    def from_proto(cls, r: pb.InfoResponse) -> Info:
        return cls(
            _from_message(
                ModelInfo,
                r.model,
                text_buckets=tuple(r.model.text_buckets),
                image_buckets=tuple(r.model.image_buckets),
            ),
            r.descriptor_set,
            r.store,
            _from_message(Limits, r.limits),
            r.version,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "model": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self.model).items()},
            "descriptor_set": self.descriptor_set,
            "store": self.store,
            "limits": vars(self.limits),
            "version": self.version,
        }
