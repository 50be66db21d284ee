"""Bring pictures to the image tower's input: uint8 RGB, shorter side scaled to the model's size, centre crop.

The tower normalises inside its graph, so nothing here does float math.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


class BadImage(ValueError):
    """The bytes are not an image the server reads (INVALID_ARGUMENT)."""


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side equal to `size`, aspect kept."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


def decode_image(data: bytes, size: int) -> np.ndarray:
    if not data:
        raise BadImage("the image is empty")
    try:
        opened = Image.open(io.BytesIO(data))
        if opened.format not in ACCEPTED_FORMATS:
            raise BadImage(f"image format {opened.format} is not accepted; send one of {', '.join(ACCEPTED_FORMATS)}")
        img = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise BadImage(f"cannot decode the image: {e}") from e
    img = img.resize(scaled_size(img.width, img.height, size), Image.Resampling.BICUBIC)
    return center_crop(np.asarray(img, dtype=np.uint8), size)
