"""How a picture becomes the image tower's input: one geometry and one resize filter, pinned in the model's
manifest (`preprocess`) and used for video frames, query images and, at export, the training images of the
demo model, so that the model sees at search time what it saw when it was made.

The resize modes are OpenCLIP's (`PreprocessCfg.resize_mode`): "shortest" scales the shorter side to the
input size and keeps the centre square (CLIP's own preprocessing), "squash" scales both sides to it (the
whole picture, aspect lost), "longest" scales the longer side to it and pads the rest with `fill`. Scaling
is swscale's (through PyAV), straight from the decoder's pixel format for video frames, so frames that are
not kept are never converted; its filter is the manifest's `interpolation`.

The tower normalises inside its graph, so nothing here does float math.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

RESIZE_MODES = ("shortest", "squash", "longest")
# manifest name -> swscale's (PyAV's Interpolation names)
INTERPOLATIONS = {"area": "AREA", "bicubic": "BICUBIC", "bilinear": "BILINEAR"}


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the shorter side equal to `size`, aspect kept."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def fitted_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(w, h) with the longer side equal to `size`, aspect kept."""
    if width >= height:
        return size, max(1, round(height * size / width))
    return max(1, round(width * size / height)), size


def center_crop(rgb: np.ndarray, size: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[top : top + size, left : left + size])


@dataclass(frozen=True)
class Framing:
    """The model's input geometry: `size` x `size` uint8 RGB from any picture."""

    size: int
    resize_mode: str = "shortest"
    interpolation: str = "area"
    fill: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"framing size must be positive, not {self.size}")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {self.resize_mode!r} is not one of {', '.join(RESIZE_MODES)}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation {self.interpolation!r} is not one of {', '.join(INTERPOLATIONS)}")

    @classmethod
    def from_manifest(cls, size: int, preprocess: dict | None) -> Framing:
        """The manifest's `preprocess` entry; exports older than it scaled video frames this way."""
        p = preprocess or {}
        return cls(
            size=size,
            resize_mode=str(p.get("resize_mode", "shortest")),
            interpolation=str(p.get("interpolation", "area")),
            fill=tuple(int(c) for c in p.get("fill", (0, 0, 0))),  # type: ignore[arg-type]
        )

    def manifest(self) -> dict:
        return {"resize_mode": self.resize_mode, "interpolation": self.interpolation, "fill": list(self.fill)}

    def frame(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded video frame (any pixel format), turned upright by its display matrix, framed."""
        tw, th = self._target(frame.width, frame.height)  # every mode is symmetric in the sides: turn after
        rgb = frame.reformat(
            width=tw, height=th, format="rgb24", interpolation=INTERPOLATIONS[self.interpolation]
        ).to_ndarray()
        turns = round(frame.rotation / 90) % 4 if frame.rotation else 0
        if turns:
            rgb = np.rot90(rgb, k=turns)
        return self._finish(rgb)

    def rgb(self, rgb: np.ndarray) -> np.ndarray:
        """An (H, W, 3) uint8 RGB picture (a decoded query image), framed with the same scaler and filter."""
        return self.frame(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb, dtype=np.uint8), format="rgb24"))

    def _target(self, w: int, h: int) -> tuple[int, int]:
        if self.resize_mode == "shortest":
            return scaled_size(w, h, self.size)
        if self.resize_mode == "longest":
            return fitted_size(w, h, self.size)
        return self.size, self.size

    def _finish(self, rgb: np.ndarray) -> np.ndarray:
        if self.resize_mode == "shortest":
            return center_crop(rgb, self.size)
        if self.resize_mode == "longest":
            out = np.empty((self.size, self.size, 3), np.uint8)
            out[...] = np.asarray(self.fill, np.uint8)
            h, w = rgb.shape[:2]
            top, left = (self.size - h) // 2, (self.size - w) // 2
            out[top : top + h, left : left + w] = rgb
            return out
        return np.ascontiguousarray(rgb)
