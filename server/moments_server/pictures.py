"""Pictures from callers (query images, FRAMES ingest): formats and limits checked from the header before any
pixel is decoded, then framed like video frames (framing.py)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from moments_server.errors import BadImage, ImageTooLarge
from moments_server.framing import Framing

ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP")


def open_image(data: bytes) -> Image.Image:
    """Read the image's header only (PIL decodes lazily) and check its format."""
    if not data:
        raise BadImage("the image is empty")
    try:
        opened = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise BadImage(f"the image is too large: {e}") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"cannot decode the image: {e}") from e
    if opened.format not in ACCEPTED_FORMATS:
        raise BadImage(f"image format {opened.format} is not accepted; send one of {', '.join(ACCEPTED_FORMATS)}")
    return opened


def check_image(data: bytes, max_bytes: int, max_pixels: int, where: str = "the image") -> Image.Image:
    """Refuse, from the header alone and before any pixel is decoded, an image over the server's limits
    (ImageTooLarge, naming it ``where``) or one the server cannot read (BadImage); return it opened."""
    if len(data) > max_bytes:
        raise ImageTooLarge(f"{where} is {len(data)} bytes; the server takes at most {max_bytes}")
    try:
        img = open_image(data)
    except BadImage as e:
        if isinstance(e.__cause__, Image.DecompressionBombError):
            raise ImageTooLarge(
                f"{where} is too large ({e.__cause__}); the server takes at most {max_pixels} pixels"
            ) from e
        raise
    if img.width * img.height > max_pixels:
        raise ImageTooLarge(
            f"{where} is {img.width}x{img.height} ({img.width * img.height} pixels); the server takes at most "
            f"{max_pixels} pixels: scale it down first (the model sees it at a few hundred pixels anyway)"
        )
    return img


# Beyond this long:short ratio the long side is cut down (centred) before scaling: the centre crop keeps
# only the middle square anyway, and scaling a 1 x 1,000,000 strip to a short side of 224 would allocate
# gigabytes. Ordinary pictures (up to 3:1) are not touched.
MAX_ASPECT = 3


def trim_aspect(img: Image.Image) -> Image.Image:
    w, h = img.size
    if max(w, h) <= MAX_ASPECT * min(w, h):
        return img
    if w > h:
        left = (w - MAX_ASPECT * h) // 2
        return img.crop((left, 0, left + MAX_ASPECT * h, h))
    top = (h - MAX_ASPECT * w) // 2
    return img.crop((0, top, w, top + MAX_ASPECT * w))


def decode_image(data: bytes, framing: Framing) -> np.ndarray:
    opened = open_image(data)
    try:
        img = opened.convert("RGB")
    except Image.DecompressionBombError as e:
        raise BadImage(f"the image is too large: {e}") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"cannot decode the image: {e}") from e
    if img.width < 1 or img.height < 1:
        raise BadImage("the image has no pixels")
    img = trim_aspect(img)
    return framing.rgb(np.asarray(img, dtype=np.uint8))
