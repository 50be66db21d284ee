"""Sample videos with known content: one drawn shape per segment, held still for the segment's seconds.

Used by `moments sample-video` (a first search that works offline) and by the end-to-end tests, which
know from the returned schedule which seconds show which shape. Needs PyAV (`pip install moments-client[video]`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moments_shapes import caption, draw

# container suffix → (encoder, pixel format) that PyAV's FFmpeg writes
CODECS: dict[str, tuple[str, str]] = {
    "h264": ("libx264", "yuv420p"),
    "hevc": ("libx265", "yuv420p"),
    "vp9": ("libvpx-vp9", "yuv420p"),
    "mpeg4": ("mpeg4", "yuv420p"),
    "mjpeg": ("mjpeg", "yuvj420p"),
}


@dataclass(frozen=True)
class Segment:
    start_s: float
    end_s: float
    color: str
    shape: str

    @property
    def caption(self) -> str:
        return caption(self.color, self.shape)


def write_shapes_video(
    path: str | Path,
    shapes: Sequence[tuple[str, str]],
    seconds_each: float | Sequence[float] = 2.0,
    fps: int = 10,
    size: tuple[int, int] = (256, 256),
    codec: str = "h264",
    seed: int = 0,
    options: Mapping[str, str] | None = None,
    codec_options: Mapping[str, str] | None = None,
    fade_s: float = 0.0,
) -> list[Segment]:
    """Write `shapes` [(color, shape), ...] one after another; returns when each is on screen. `seconds_each`
    is every shape's duration, or one per shape (rounded to whole frames: cuts need not fall on whole
    seconds). `fade_s` > 0 cross-fades from each shape to the next over that many seconds centred on the
    boundary (the schedule keeps the boundary), instead of a hard cut. `options` go to the muxer (say, an
    .m3u8 playlist's hls_time), `codec_options` to the encoder (say, its GOP size)."""
    import av  # optional dependency

    encoder, pix_fmt = CODECS[codec]
    rng = np.random.default_rng(seed)
    width, height = size
    durations = [float(seconds_each)] * len(shapes) if isinstance(seconds_each, int | float) else list(seconds_each)
    if len(durations) != len(shapes):
        raise ValueError(f"{len(durations)} durations for {len(shapes)} shapes")
    counts = [max(1, round(d * fps)) for d in durations]
    images = [draw(color, shape, size, rng) for color, shape in shapes]
    bounds = np.cumsum(counts)[:-1]  # frame index where each next shape starts
    half = fade_s * fps / 2
    schedule: list[Segment] = []
    with av.open(str(path), mode="w", options=dict(options or {})) as container:
        stream = container.add_stream(encoder, rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if encoder == "libx265":
            stream.options = {"x265-params": "log-level=error"}
        if codec_options:
            stream.options = {**stream.options, **codec_options}
        index = 0
        for k, (color, shape) in enumerate(shapes):
            start = index / fps
            for _ in range(counts[k]):
                image = images[k]
                for b, boundary in enumerate(bounds):  # inside a cross-fade: a blend of the two shapes
                    if half > 0 and abs(index + 0.5 - boundary) < half:
                        alpha = (index + 0.5 - (boundary - half)) / (2 * half)
                        blend = (1 - alpha) * images[b].astype(np.float32) + alpha * images[b + 1]
                        image = blend.round().astype(np.uint8)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
                index += 1
            schedule.append(Segment(start, index / fps, color, shape))
        for packet in stream.encode():
            container.mux(packet)
    return schedule
