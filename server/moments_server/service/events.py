"""What an ingest reports while it runs, in the core's types (the transport sends each as an IngestEvent)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from moments_server.catalog.model import VideoRecord


@dataclass
class Accepted:
    video_id: str
    replacing: bool = False
    upload_id: str = ""  # LIVE and FRAMES: what a broken stream resumes with
    offset: int = 0  # a resumed stream: bytes (LIVE) or frames (FRAMES) stored
    media_s: float = 0.0


@dataclass
class Progress:
    bytes_received: int = 0
    frames_decoded: int = 0
    frames_embedded: int = 0
    frames_stored: int = 0


@dataclass
class Committed:
    """A LIVE or FRAMES segment is stored and searchable."""

    bytes: int
    media_s: float
    frames: int
    segments: int


@dataclass
class PullState:
    """A pull's source: media read so far, reconnects, and the last error while it retries."""

    media_s: float
    reconnects: int
    error: str = ""
    retry_in_s: float = 0.0


@dataclass
class Timings:
    receive_s: float = 0.0
    decode_s: float = 0.0
    embed_s: float = 0.0
    store_s: float = 0.0
    total_s: float = 0.0


@dataclass
class Done:
    video: VideoRecord
    frames: int
    timings: Timings = field(default_factory=Timings)


IngestEvent = Accepted | Progress | Committed | PullState | Done
# Sends one event to the caller (events of one call are sent one at a time, in order).
Emit = Callable[[IngestEvent], Awaitable[None]]
