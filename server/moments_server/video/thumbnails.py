"""The small JPEG of a sampled frame that a clip keeps (IngestHeader.thumbnails)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

JPEG_QUALITY = 85


def thumbnail(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG", quality=JPEG_QUALITY)
    return out.getvalue()
