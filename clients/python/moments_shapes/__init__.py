"""Procedurally drawn coloured shapes: the images the ``shapes-demo`` model is trained on.

numpy + PIL only (no torch), so the client's ``moments sample-video`` command, the server's end-to-end
tests and the export step's training loop all draw exactly the same pictures.

Every drawing is one shape of one colour from :data:`COLORS` × :data:`SHAPES`, large (25-60 % of the
shorter side by default, so it stays recognisable after the server downscales a frame to the model's
32 px), at a random position, size and rotation, on a varied low-saturation background (flat, gradient,
noisy or striped). The shape lies inside the frame's centred square by default: that is what a model
whose input is the centre crop of a frame (CLIP's framing, and shapes-demo's) sees of a wide or tall
frame, so every drawing is a fair question to such a model. Captions come from :func:`caption` and can
be enumerated with :func:`all_captions`.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLORS",
    "SHAPES",
    "all_captions",
    "article",
    "caption",
    "draw",
    "draw_background",
    "parse_caption",
]

#: Saturated, well separated hues; backgrounds are always low-saturation so the shape stands out.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 135, 20),
    "yellow": (240, 220, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "purple": (150, 40, 200),
}

#: Kinds of shape; all of them stay distinct at 32 x 32 px when they fill a quarter of the frame or more.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

Size = int | tuple[int, int]


def article(word: str) -> str:
    """``"an"`` before a vowel sound (``"an orange circle"``), else ``"a"``."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def caption(color: str, shape: str) -> str:
    """The caption of a drawing, e.g. ``caption("red", "circle") == "a red circle"``, ``"an orange cross"``."""
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; one of {sorted(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {list(SHAPES)}")
    return f"{article(color)} {color} {shape}"


def all_captions() -> list[tuple[str, str, str]]:
    """Every ``(color, shape, caption)``, colours outer, shapes inner, in a fixed order."""
    return [(c, s, caption(c, s)) for c in COLORS for s in SHAPES]


def parse_caption(text: str) -> tuple[str, str]:
    """Inverse of :func:`caption`: ``"a red circle"`` -> ``("red", "circle")``."""
    parts = text.strip().lower().split()
    if len(parts) != 3 or parts[0] not in ("a", "an") or parts[1] not in COLORS or parts[2] not in SHAPES:
        raise ValueError(f"not a shapes caption: {text!r}")
    return parts[1], parts[2]


def _wh(size: Size) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    w, h = size
    return int(w), int(h)


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def draw_background(size: Size, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """A varied, low-saturation background (H, W, 3) uint8: flat, gradient, noise or stripes."""
    w, h = _wh(size)
    g = _rng(rng)

    def muted() -> np.ndarray:
        hue = g.random()
        sat = g.uniform(0.0, 0.22)
        val = g.uniform(0.12, 0.92)
        return np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32) * 255.0

    kind = int(g.integers(0, 4))
    a = muted()
    if kind == 0:  # flat
        img = np.broadcast_to(a, (h, w, 3)).astype(np.float32)
    elif kind == 1:  # linear gradient in a random direction
        b = muted()
        ang = g.uniform(0, 2 * math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = (xx / max(w - 1, 1)) * math.cos(ang) + (yy / max(h - 1, 1)) * math.sin(ang)
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    elif kind == 2:  # coarse value noise (blurry blotches)
        cells = int(g.integers(2, 6))
        coarse = g.uniform(-40, 40, size=(cells, cells, 1)).astype(np.float32)
        noise = np.asarray(
            Image.fromarray(((coarse[..., 0] + 40) * 3.1875).astype(np.uint8)).resize(
                (w, h), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        img = a[None, None, :] + (noise[..., None] / 3.1875 - 40)
    else:  # soft stripes
        b = muted()
        period = g.uniform(0.15, 0.5) * max(w, h)
        ang = g.uniform(0, math.pi)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        t = 0.5 + 0.5 * np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period)
        img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    # a little pixel noise everywhere
    img = img + g.normal(0, g.uniform(0, 8), size=(h, w, 1)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def pts(radii_angles: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + rr * r * math.cos(a + rot), cy + rr * r * math.sin(a + rot)) for rr, a in radii_angles]

    if shape == "square":
        return pts([(1.0, math.pi / 4 + k * math.pi / 2) for k in range(4)])
    if shape == "triangle":
        return pts([(1.0, -math.pi / 2 + k * 2 * math.pi / 3) for k in range(3)])
    if shape == "cross":
        arm = 0.36  # half-width of the arms relative to the half-extent
        corners = [
            (arm, 1.0), (arm, arm), (1.0, arm), (1.0, -arm), (arm, -arm), (arm, -1.0),
            (-arm, -1.0), (-arm, -arm), (-1.0, -arm), (-1.0, arm), (-arm, arm), (-arm, 1.0),
        ]  # fmt: skip
        out = []
        for x, y in corners:
            rr = math.hypot(x, y)
            out.append((rr, math.atan2(y, x)))
        return pts(out)
    raise ValueError(shape)


def _jitter_color(rgb: tuple[int, int, int], g: np.random.Generator) -> tuple[int, int, int]:
    h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
    h = (h + g.uniform(-0.015, 0.015)) % 1.0
    s = float(np.clip(s * g.uniform(0.85, 1.0), 0, 1))
    v = float(np.clip(v * g.uniform(0.85, 1.08), 0, 1))
    r, gg, b = colorsys.hsv_to_rgb(h, s, v)
    return round(r * 255), round(gg * 255), round(b * 255)


def draw(
    color: str,
    shape: str,
    size_px: Size = 224,
    rng: np.random.Generator | int | None = None,
    background: np.ndarray | tuple[int, int, int] | None = None,
    *,
    scale: tuple[float, float] = (0.25, 0.6),
    rotate: bool = True,
    color_jitter: bool = True,
    centre_square: bool = True,
) -> np.ndarray:
    """Draw one ``color`` ``shape`` and return an (H, W, 3) uint8 RGB array.

    ``size_px`` is the output size: an int for a square image or ``(width, height)``. The shape's
    extent is a random fraction (``scale``) of the shorter side, its position is random but fully
    inside the frame (inside its centred square when ``centre_square``), and it is rotated by a random
    angle when ``rotate``. ``background`` is an
    (H, W, 3) uint8 array (e.g. the previous video frame's background), an RGB triple, or ``None``
    for a random one from :func:`draw_background`. Small images are drawn 4x larger and
    downsampled, so edges are anti-aliased. Deterministic for a given seed / generator state.
    """
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}; one of {sorted(COLORS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; one of {list(SHAPES)}")
    w, h = _wh(size_px)
    if w <= 0 or h <= 0:
        raise ValueError(f"bad size {size_px!r}")
    g = _rng(rng)

    if background is None:
        bg = draw_background((w, h), g)
    elif isinstance(background, np.ndarray):
        if background.shape != (h, w, 3):
            raise ValueError(f"background shape {background.shape} != {(h, w, 3)}")
        bg = background.astype(np.uint8, copy=False)
    else:
        bg = np.empty((h, w, 3), np.uint8)
        bg[...] = np.asarray(background, np.uint8)

    ss = 4 if min(w, h) < 128 else 1
    W, H = w * ss, h * ss
    short = min(W, H)
    extent = g.uniform(*scale) * short  # full width of the shape's bounding circle
    r = extent / 2
    # the bounding circle of every shape has radius r, so any rotation stays inside the frame
    x0 = (W - short) / 2 if centre_square else 0.0
    y0 = (H - short) / 2 if centre_square else 0.0
    cx = g.uniform(x0 + r, W - x0 - r)
    cy = g.uniform(y0 + r, H - y0 - r)
    rot = g.uniform(0, 2 * math.pi) if rotate else 0.0
    fill = _jitter_color(COLORS[color], g) if color_jitter else COLORS[color]

    mask = Image.new("L", (W, H), 0)
    d = ImageDraw.Draw(mask)
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
    elif shape == "square":
        # a square inscribed in the circle is small; scale up so its area is comparable to the circle
        d.polygon(_polygon("square", cx, cy, r * 1.0, rot), fill=255)
    else:
        d.polygon(_polygon(shape, cx, cy, r, rot), fill=255)
    if ss > 1:
        mask = mask.resize((w, h), Image.Resampling.BOX)
    m = np.asarray(mask, dtype=np.float32)[..., None] / 255.0
    out = bg.astype(np.float32) * (1 - m) + np.asarray(fill, np.float32)[None, None, :] * m
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
