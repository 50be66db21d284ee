"""What callers ask of the core, in its own types: the transport converts protobuf into these (and refuses
what no protobuf enum names); the core checks them against the server's limits."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from moments_server.catalog.model import PropertyValue

# A caller's metadata value; None: a value with no kind set (refused where it is used).
Value = PropertyValue | None


class IngestMode(Enum):
    UPLOAD = "upload"  # a file, all or nothing
    LIVE = "live"  # container bytes committed in segments
    FRAMES = "frames"  # pictures the sender sampled, committed in segments


class Windows(Enum):
    DEFAULT = "default"  # the server's default_windows, where it applies
    FIXED = "fixed"
    SHOTS = "shots"


@dataclass
class Sampling:
    fps: float = 0.0  # 0 means 1
    max_frames: int = 0  # 0: the server's max_frames
    keyframes: bool = False
    windows: Windows = Windows.DEFAULT


@dataclass
class IngestSpec:
    """An Ingest call's header."""

    video_id: str
    filename: str = ""
    metadata: dict[str, Value] = field(default_factory=dict)
    replace: bool = False
    sha256: str = ""
    thumbnails: bool = False
    size_bytes: int = 0
    sampling: Sampling = field(default_factory=Sampling)
    mode: IngestMode = IngestMode.UPLOAD
    segment_s: float = 0.0
    resume_upload_id: str = ""
    resume_offset: int = 0
    source_url: str = ""

    @property
    def streamed(self) -> bool:
        """Committed in segments as it arrives (LIVE, FRAMES or a pull), not all or nothing."""
        return self.mode is not IngestMode.UPLOAD or bool(self.source_url)


@dataclass
class FrameIn:
    """A FRAMES stream's picture: encoded bytes and its time in the stream."""

    image: bytes
    time_s: float


class Op(Enum):
    EQ = "=="
    NE = "!="
    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    IN = "in"


@dataclass
class Condition:
    key: str
    op: Op | None  # None: no operator given
    values: list[Value] = field(default_factory=list)


@dataclass
class Filters:
    video_ids: list[str] = field(default_factory=list)
    start_s: float | None = None
    end_s: float | None = None
    conditions: list[Condition] = field(default_factory=list)
    complete_only: bool = False


class MomentSpan(Enum):
    WINDOW = "window"
    SHOT = "shot"


@dataclass
class SearchOptions:
    merge_adjacent: bool = False
    group_by_video: bool = False
    include_thumbnails: bool = False
    min_score: float | None = None
    merge_tolerance: float | None = None
    max_per_video: int = 0
    relative_score: float | None = None
    negative_weight: float | None = None
    negative_margin: float | None = None
    moment_span: MomentSpan = MomentSpan.WINDOW


@dataclass
class QueryPart:
    text: str | None = None
    image: bytes | None = None
    weight: float = 0.0  # 0 means 1


@dataclass
class SearchQuery:
    """A Search call: text or image (or the general `parts`), alternatives and negatives, filters, options."""

    text: str | None = None
    image: bytes | None = None
    top_k: int = 0
    filters: Filters = field(default_factory=Filters)
    options: SearchOptions = field(default_factory=SearchOptions)
    page_token: str = ""
    parts: list[QueryPart] = field(default_factory=list)
    any_texts: list[str] = field(default_factory=list)
    negative_texts: list[str] = field(default_factory=list)
