"""FRAMES ingest: a sender's JPEG/PNG frames checked like query images, brought to the model's input the way
video frames are (the model's framing: moments_server/framing.py).

Errors name the frame's index in the stream: an undecodable picture is INVALID_ARGUMENT, one over the
server's image limits RESOURCE_EXHAUSTED (checked from its header, before any pixel is decoded).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from moments_server.errors import BadImage, ImageTooLarge, InvalidArgument, ResourceExhausted
from moments_server.framing import Framing
from moments_server.pictures import check_image, trim_aspect


@dataclass(frozen=True)
class DecodedFrame:
    rgb: np.ndarray  # (size, size, 3) uint8
    width: int  # of the picture as sent
    height: int


def check_time(index: int, time_s: float, previous_s: float | None) -> None:
    """A frame's time: finite, >= 0, after the previous frame's (or at/after the committed end on a resume)."""
    if not math.isfinite(time_s) or time_s < 0:
        raise InvalidArgument(f"frame {index}: time_s must be a finite number of seconds >= 0, got {time_s}")
    if previous_s is not None and not time_s > previous_s:
        raise InvalidArgument(
            f"frame {index}: time_s {time_s} is not after the previous frame's {previous_s}; frame times must "
            "increase strictly"
        )


def decode_frame(data: bytes, index: int, framing: Framing, max_bytes: int, max_pixels: int) -> DecodedFrame:
    """Blocking (run it in a thread): check, decode and scale one frame."""
    try:
        img = check_image(data, max_bytes, max_pixels, f"frame {index}")
    except ImageTooLarge as e:
        raise ResourceExhausted(str(e)) from e
    except BadImage as e:
        raise InvalidArgument(f"frame {index}: {e}") from e
    width, height = img.size
    try:
        rgb = img.convert("RGB")
        rgb.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise InvalidArgument(f"frame {index}: cannot decode the image: {e}") from e
    if width < 1 or height < 1:
        raise InvalidArgument(f"frame {index}: the image has no pixels")
    return DecodedFrame(framing.rgb(np.asarray(trim_aspect(rgb), dtype=np.uint8)), width, height)
