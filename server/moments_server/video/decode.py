"""Probe and sample videos with PyAV.

Sampling is by time: frames are decoded in order and the first frame of each 1/fps window is kept,
the rest dropped (no seeking: seeking lands on keyframes and costs more than it saves at ~1 fps on
typical GOPs). Kept frames are scaled by swscale straight to the model's input (shorter side) and
centre-cropped, and turned upright by the stream's display matrix.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import av.error
import numpy as np

from moments_server.inference.preprocess import center_crop, scaled_size


class BadVideo(ValueError):
    """The upload is not a video PyAV can decode (INVALID_ARGUMENT); the message carries the decoder's reason."""


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    container: str
    frame_count: int


@dataclass(frozen=True)
class SampledFrame:
    index: int  # order among the kept frames
    time_s: float  # presentation time of the frame, from the stream start
    start_s: float  # the sampling window this frame stands for
    end_s: float
    rgb: np.ndarray  # (size, size, 3) uint8


def _open(path: Path) -> av.container.InputContainer:
    try:
        # metadata_errors: tags that are not valid UTF-8 (a damaged or hostile file) must not fail the open
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise BadVideo(f"cannot read the upload as a video: {getattr(e, 'strerror', None) or e}") from e
    if not container.streams.video:
        container.close()
        raise BadVideo("the upload holds no video stream")
    if container.streams.video[0].codec_context is None:  # a codec id FFmpeg does not know
        container.close()
        raise BadVideo("the upload's video stream is in a codec this server cannot decode")
    return container


def probe(path: Path) -> VideoInfo:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.base_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = stream.frames or (round(duration * fps) if fps else 0)
        return VideoInfo(duration, fps, ctx.width, ctx.height, ctx.name, container.format.name, frames)
    finally:
        container.close()


def sample(
    path: Path,
    fps: float,
    max_frames: int,
    size: int,
    on_decoded: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> Iterator[SampledFrame]:
    """Yield one frame per 1/fps window, scaled and cropped to `size`. Raises BadVideo on corrupt input."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base
        start = float(stream.start_time * time_base) if stream.start_time is not None and time_base else 0.0
        info_duration = float(stream.duration * time_base) if stream.duration and time_base else math.inf
        last_slot = -1
        kept = decoded = 0
        fallback_rate = float(stream.average_rate or 25)
        try:
            for frame in container.decode(stream):
                decoded += 1
                if on_decoded is not None and decoded % 16 == 0:
                    on_decoded(decoded)
                if should_stop is not None and should_stop():
                    return
                t = (frame.time - start) if frame.time is not None else (decoded - 1) / fallback_rate
                slot = math.floor(t * fps + 1e-6)
                if slot <= last_slot:
                    continue
                last_slot = slot
                w, h = scaled_size(frame.width, frame.height, size)
                rgb = frame.reformat(width=w, height=h, format="rgb24", interpolation="AREA").to_ndarray()
                turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
                if turns:
                    rgb = np.rot90(rgb, k=turns)
                # The last window ends with the stream (when its duration is known and inside the window).
                window_end = (slot + 1) / fps
                if slot / fps < info_duration < window_end:
                    window_end = info_duration
                yield SampledFrame(kept, max(t, 0.0), slot / fps, window_end, center_crop(rgb, size))
                kept += 1
                if max_frames and kept >= max_frames:
                    return
        except av.error.FFmpegError as e:
            raise BadVideo(f"the video stopped decoding after {decoded} frames: {e}") from e
        finally:
            if on_decoded is not None:
                on_decoded(decoded)
        if decoded == 0:
            raise BadVideo("the video stream holds no decodable frame")
    finally:
        container.close()
