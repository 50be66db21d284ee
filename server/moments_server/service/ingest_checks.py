"""An ingest's checks before any byte is spooled (its header) and before any frame is decoded (the probed
video), and the server's default windows."""

from __future__ import annotations

import math

from moments_server.catalog.model import VIDEO_ID
from moments_server.config import Settings
from moments_server.errors import DataLoss, InvalidArgument, ResourceExhausted
from moments_server.service.pull import check_source_url
from moments_server.service.requests import IngestMode, IngestSpec, Windows
from moments_server.video.decode import VideoInfo


def validate_header(header: IngestSpec, settings: Settings) -> None:
    """The header's own checks (its metadata: values.metadata_from_request)."""
    if not VIDEO_ID.match(header.video_id):
        raise InvalidArgument("header.video_id must be 1-128 characters of [A-Za-z0-9._:-]")
    fps = header.sampling.fps
    if not math.isfinite(fps) or fps < 0 or fps > settings.max_fps:
        raise InvalidArgument(f"sampling.fps must be in (0, {settings.max_fps}]; 0 means 1; got {fps}")
    if header.sampling.max_frames > settings.max_frames:
        raise InvalidArgument(f"sampling.max_frames must be at most {settings.max_frames}")
    windows = header.sampling.windows
    if windows is Windows.SHOTS and header.sampling.keyframes:
        raise InvalidArgument("sampling.windows SHOTS detects shots on the decoded frames: it needs keyframes = false")
    if windows is Windows.SHOTS and header.streamed:
        raise InvalidArgument(
            "sampling.windows SHOTS is for uploads; LIVE, FRAMES and pulled streams keep fixed windows: leave it unset"
        )
    if header.sha256 and (len(header.sha256) != 64 or any(c not in "0123456789abcdef" for c in header.sha256)):
        raise InvalidArgument("header.sha256 must be 64 lowercase hex characters")
    if header.mode is IngestMode.FRAMES and (
        header.sampling.fps
        or header.sampling.max_frames
        or header.sampling.keyframes
        or header.sampling.windows is not Windows.DEFAULT
    ):
        raise InvalidArgument("a FRAMES stream keeps every frame sent (the sender samples): leave sampling unset")
    if header.source_url:
        check_source_url(header.source_url)
        if header.mode is IngestMode.FRAMES:
            raise InvalidArgument("source_url pulls a LIVE stream: leave mode UNSPECIFIED or LIVE")
        if header.resume_upload_id:
            raise InvalidArgument("a pull does not resume an upload: pull again (replace=true overwrites the video)")
        if header.size_bytes:
            raise InvalidArgument("size_bytes is for uploads; a pull has none: leave it 0")
    if header.streamed:
        seg = header.segment_s
        if seg and not settings.live_segment_min_s <= seg <= settings.live_segment_max_s:
            raise InvalidArgument(
                f"segment_s must be between {settings.live_segment_min_s} and {settings.live_segment_max_s} "
                "seconds (0 = the server's default)"
            )
        if header.sha256:
            raise InvalidArgument("sha256 checks a whole upload; a LIVE or FRAMES stream has none: leave it empty")
        if header.resume_upload_id and header.replace:
            raise InvalidArgument("a resumed stream continues its video: replace does not apply")
        return  # a live stream has no size to check
    if header.segment_s or header.resume_upload_id:
        raise InvalidArgument(
            "segment_s and resume_upload_id are for LIVE and FRAMES ingests (mode = INGEST_MODE_LIVE or _FRAMES)"
        )
    if header.size_bytes > settings.max_stored_video_bytes:
        raise ResourceExhausted(
            f"the upload is {header.size_bytes} bytes; the server takes at most {settings.max_stored_video_bytes}"
            + store_bound_note(settings)
        )


def store_bound_note(settings: Settings) -> str:
    """Why the bound is below max_upload_bytes, when it is: the store takes the video in one message."""
    if settings.max_stored_video_bytes >= settings.max_upload_bytes:
        return ""
    return (
        " (the store receives the video in one query message; Info's limits.max_stored_video_bytes): "
        "split the video, or serve this server on an in-process embedded store"
    )


def check_video(info: VideoInfo, settings: Settings) -> None:
    """Refuse, from the probe and before any frame is decoded, videos the server does not take."""
    if info.width * info.height > settings.max_video_pixels:
        raise InvalidArgument(
            f"the video is {info.width}x{info.height} ({info.width * info.height} pixels); the server takes at most "
            f"{settings.max_video_pixels} pixels a frame: scale it down first"
        )
    short_side = min(info.width, info.height)
    aspect = settings.max_video_aspect
    if short_side > 0 and max(info.width, info.height) > aspect * short_side:
        raise InvalidArgument(
            f"the video is {info.width}x{info.height}; the server takes frames up to {aspect}:1 wide or tall"
        )
    if not math.isfinite(info.duration_s) or info.duration_s > settings.max_video_duration_s:
        raise InvalidArgument(
            f"the video lasts {info.duration_s:.0f} s; the server takes at most {settings.max_video_duration_s:.0f} s: "
            "split it into parts"
        )


def check_size(header: IngestSpec, received: int, finished: bool) -> None:
    """header.size_bytes, when given, must be what arrives: no more while receiving, exactly that at the end."""
    declared = header.size_bytes
    if declared and (received > declared or (finished and received != declared)):
        raise DataLoss(
            f"the header says size_bytes={declared}, {'at least ' if not finished else ''}{received} bytes arrived; "
            "resend the video with its true size (or size_bytes=0 when unknown)"
        )


def shot_windows(header: IngestSpec, settings: Settings) -> bool:
    """Whether an upload's windows follow its shots: asked for, or the server's default where it applies."""
    if header.sampling.windows is Windows.DEFAULT:
        return settings.default_windows == "shots" and not header.sampling.keyframes
    return header.sampling.windows is Windows.SHOTS
