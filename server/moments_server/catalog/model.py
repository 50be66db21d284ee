"""The records of the data model (DESIGN.md): Video → Clip per sampled window → Descriptor (+ thumbnail Image)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

# Properties the server writes itself. The caller's metadata may not use these names, nor names
# starting with '_' (reserved by ApertureDB).
VIDEO_FIELDS = (
    "video_id",
    "filename",
    "duration_s",
    "fps",
    "width",
    "height",
    "codec",
    "container",
    "ingested_at",
    "status",
    "frames",
    "size_bytes",
    "sha256",
    "state",
    # LIVE streams: how to resume one (service/live.py)
    "upload_id",
    "stream_start_s",
    "init_end",
    "restart_offset",
    # when its stream last committed (epoch seconds), and the id of a stream that expired (upload_ttl_s)
    "active_at",
    "expired_upload_id",
    # shots found at ingest (shot-aware windows; absent: fixed windows)
    "shots",
)
# shot, shot_start_s, shot_end_s: a shot-aware frame's shot (its index in the video) and that shot's range
FRAME_FIELDS = ("video_id", "frame_s", "start_s", "end_s", "state", "shot", "shot_start_s", "shot_end_s")
RESERVED_KEYS = frozenset(VIDEO_FIELDS) | frozenset(FRAME_FIELDS)

FRAME_EDGE = "has_frame"  # Descriptor → Clip
THUMBNAIL_EDGE = "has_thumbnail"  # Image → Clip
SEGMENT_EDGE = "has_segment"  # Video → Blob: a LIVE video's bytes after its first segment
# One entity per caller metadata key ever stored ({key, type}), written in the transaction that stores the
# key: a replica that meets an unknown key in a filter asks the store for it, so no cache goes stale.
METADATA_KEY_CLASS = "MomentsMetadataKey"

# A video's `state` (and its frames'): uploads are complete when they become visible; LIVE ingests are
# "live" while their stream runs, then "complete" or "interrupted".
COMPLETE, LIVE, INTERRUPTED = "complete", "live", "interrupted"
# The codec and container of a FRAMES ingest's video (pictures, no video bytes).
FRAMES_CONTAINER = "frames"

METADATA_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
VIDEO_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# A property value as ApertureDB holds it: str, float/int, bool, or {"_date": "..."}.
PropertyValue = str | float | int | bool | dict[str, str]


@dataclass
class FrameRecord:
    time_s: float
    start_s: float
    end_s: float
    # shot-aware windows: the frame's shot (index in the video) and its time range
    shot: int | None = None
    shot_start_s: float | None = None
    shot_end_s: float | None = None

    def shot_properties(self) -> dict[str, Any]:
        if self.shot is None:
            return {}
        props: dict[str, Any] = {"shot": self.shot, "shot_start_s": self.shot_start_s}
        if self.shot_end_s is not None:
            props["shot_end_s"] = self.shot_end_s
        return props


@dataclass
class VideoRecord:
    video_id: str
    filename: str
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    container: str
    ingested_at: str
    frames: int
    size_bytes: int
    sha256: str
    metadata: dict[str, PropertyValue] = field(default_factory=dict)
    state: str = COMPLETE
    # LIVE: the id a broken stream resumes with, its first timestamp (stream seconds), where its container
    # header ends (bytes a restarted demuxer reads first) and the byte offset of a keyframe a decoder can
    # restart from after the committed part
    upload_id: str = ""
    stream_start_s: float = 0.0
    init_end: int = 0
    restart_offset: int = 0
    active_at: float = 0.0
    shots: int = 0  # shots found (shot-aware windows); 0: fixed windows

    def properties(self) -> dict[str, Any]:
        props: dict[str, Any] = {
            "video_id": self.video_id,
            "filename": self.filename,
            "duration_s": self.duration_s,
            "fps": self.fps,
            "width": self.width,
            "height": self.height,
            "codec": self.codec,
            "container": self.container,
            "ingested_at": {"_date": self.ingested_at},
            "status": "ready",
            "frames": self.frames,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "state": self.state,
        }
        if self.shots:
            props["shots"] = self.shots
        if self.upload_id:
            props.update(
                upload_id=self.upload_id,
                stream_start_s=self.stream_start_s,
                init_end=self.init_end,
                restart_offset=self.restart_offset,
                active_at=self.active_at,
            )
        props.update(self.metadata)
        return props

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> VideoRecord:
        ingested = props.get("ingested_at", "")
        return cls(
            video_id=str(props["video_id"]),
            filename=str(props.get("filename", "")),
            duration_s=float(props.get("duration_s", 0.0)),
            fps=float(props.get("fps", 0.0)),
            width=int(props.get("width", 0)),
            height=int(props.get("height", 0)),
            codec=str(props.get("codec", "")),
            container=str(props.get("container", "")),
            ingested_at=str(ingested.get("_date", "")) if isinstance(ingested, dict) else str(ingested),
            frames=int(props.get("frames", 0)),
            size_bytes=int(props.get("size_bytes", 0)),
            sha256=str(props.get("sha256", "")),
            metadata=user_metadata(props),
            state=str(props.get("state", COMPLETE)),  # videos stored before states existed are uploads
            upload_id=str(props.get("upload_id", "")),
            stream_start_s=float(props.get("stream_start_s", 0.0)),
            init_end=int(props.get("init_end", 0)),
            restart_offset=int(props.get("restart_offset", 0)),
            active_at=float(props.get("active_at", 0.0)),
            shots=int(props.get("shots", 0)),
        )


def user_metadata(props: dict[str, Any]) -> dict[str, PropertyValue]:
    return {k: v for k, v in props.items() if not k.startswith("_") and k not in RESERVED_KEYS}


def now_date() -> str:
    """A video's `ingested_at`: now, UTC, to the millisecond (RFC 3339)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def time_offset(seconds: float) -> str:
    """ApertureDB's time_offset_range format, "hh:mm:ss.uuuuuu"."""
    micros = round(seconds * 1_000_000)
    hours, rest = divmod(micros, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    secs, micros = divmod(rest, 1_000_000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}.{micros:06d}"


def value_type(value: Any) -> str:
    """The filter type of a stored metadata value: bool, number, date (a time offset) or string."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, dict):
        return "date"
    return "string"
