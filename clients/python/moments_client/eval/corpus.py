"""A labelled corpus for the offline ``shapes-demo`` model: PyAV videos of drawn shapes with known schedules.

    python -m moments_client.eval.corpus OUT_DIR [--seed 0]
    moments eval OUT_DIR/set.json --ingest

Writes ``OUT_DIR/videos/*`` (h264, vp9 and mpeg4; 4:3 and 16:9), ``OUT_DIR/queries/*.png`` (image queries:
each a fresh drawing of the shape, never a frame of a video) and ``OUT_DIR/set.json`` (the labelled set,
docs/eval.md). Four videos, 38 s in all, made of shots:

* a shot shows zero, one or two shapes (two: side by side) on a drawn background, seen through a slowly
  panning "camera" with a little sensor noise and brightness flicker on every frame;
* a shot begins with a hard cut or with a gradual fade of :data:`FADE_S` seconds centred on the boundary
  between the two shots. Relevance of a fade: each shot's range ends (and the next begins) at the boundary,
  i.e. where the two pictures are mixed half and half; the frames before it belong to the shot that fades out.

Every shape of a shot is relevant over the whole shot (a range per shot; consecutive shots showing the same
shape make one range). Text queries are the captions ("a red circle"), image queries the same captions drawn
afresh; one more text query carries a metadata filter (16:9 videos only). The drawings keep to the centre
square of the frame, the part the server's centre crop sees. Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from moments_client.sample_video import CODECS
from moments_shapes import caption, draw, draw_background

__all__ = ["FADE_S", "FPS", "PLANS", "Shot", "VideoPlan", "relevant_ranges", "write_corpus"]

FPS = 10
FADE_S = 1.0
MARGIN = 0.05  # of the frame's height: how far the camera pans
NOISE_SIGMA = 3.0  # sensor noise per frame (0-255 scale)
SUFFIX = {"h264": ".mp4", "mpeg4": ".avi", "vp9": ".webm", "hevc": ".mp4", "mjpeg": ".avi"}


@dataclass(frozen=True)
class Shot:
    seconds: float
    objects: tuple[tuple[str, str], ...]  # (color, shape) pairs; () = background only
    enter: str = "cut"  # how the shot begins: "cut" or "fade" (from the previous shot)


@dataclass(frozen=True)
class VideoPlan:
    id: str
    codec: str
    size: tuple[int, int]
    shots: tuple[Shot, ...]

    @property
    def aspect(self) -> str:
        w, h = self.size
        return "16:9" if abs(w / h - 16 / 9) < 0.02 else "4:3" if abs(w / h - 4 / 3) < 0.02 else f"{w}:{h}"

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.shots)

    def bounds(self) -> list[tuple[float, float]]:
        out, t = [], 0.0
        for s in self.shots:
            out.append((t, t + s.seconds))
            t += s.seconds
        return out


#: The demo corpus: similar captions side by side (orange square / orange cross, yellow cross / yellow
#: triangle), shapes that recur across videos, empty background shots, cuts, fades and two-shape shots.
PLANS: tuple[VideoPlan, ...] = (
    VideoPlan(
        "cuts-h264-4x3",
        "h264",
        (320, 240),
        (
            Shot(3, (("red", "circle"),)),
            Shot(3, (("blue", "square"),)),
            Shot(3, (("green", "triangle"),)),
            Shot(2, ()),
        ),
    ),
    VideoPlan(
        "fades-vp9-16x9",
        "vp9",
        (384, 216),
        (
            Shot(3, (("yellow", "cross"),)),
            Shot(3, (("purple", "circle"),), "fade"),
            Shot(3, (("orange", "square"),), "fade"),
        ),
    ),
    VideoPlan(
        "pairs-mpeg4-16x9",
        "mpeg4",
        (384, 216),
        (
            Shot(4, (("red", "circle"), ("blue", "triangle"))),
            Shot(2, ()),
            Shot(3, (("green", "cross"),)),
        ),
    ),
    VideoPlan(
        "mixed-h264-4x3",
        "h264",
        (320, 240),
        (
            Shot(3, (("blue", "square"),)),
            Shot(3, (("red", "circle"), ("yellow", "triangle")), "fade"),
            Shot(3, (("orange", "cross"),)),
        ),
    ),
)


def relevant_ranges(plan: VideoPlan) -> dict[str, list[tuple[float, float]]]:
    """{caption: [(start_s, end_s), ...]} of one video: each shape over its shots (fades split at the
    boundary), consecutive shots of the same shape joined."""
    out: dict[str, list[tuple[float, float]]] = {}
    for shot, (start, end) in zip(plan.shots, plan.bounds(), strict=True):
        for color, shape in shot.objects:
            spans = out.setdefault(caption(color, shape), [])
            if spans and abs(spans[-1][1] - start) < 1e-9:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
    return out


class _ShotPicture:
    """One shot's still picture, larger than the frame by the pan margin, and the camera's path over it."""

    def __init__(self, shot: Shot, size: tuple[int, int], rng: np.random.Generator) -> None:
        w, h = size
        self.m = max(2, round(MARGIN * h))
        cw, ch = w + 2 * self.m, h + 2 * self.m
        canvas = draw_background((cw, ch), rng)
        # the shapes stay inside the centre square of the frame (what the model's centre crop sees)
        x0, y0 = (cw - h) // 2, self.m
        square = canvas[y0 : y0 + h, x0 : x0 + h]
        if len(shot.objects) == 1:
            (color, shape) = shot.objects[0]
            square = draw(color, shape, (h, h), rng, background=square, scale=(0.35, 0.6))
        elif shot.objects:
            half = h // len(shot.objects)
            parts = []
            for i, (color, shape) in enumerate(shot.objects):
                bg = square[:, i * half : (i + 1) * half if i < len(shot.objects) - 1 else h]
                parts.append(draw(color, shape, (bg.shape[1], h), rng, background=bg, scale=(0.6, 0.9)))
            square = np.concatenate(parts, axis=1)
        canvas = canvas.copy()
        canvas[y0 : y0 + h, x0 : x0 + h] = square
        self.canvas = canvas
        self.size = size
        # the pan: from one point of the margin box to another, linear over the shot
        self.a = rng.uniform(0, 2 * self.m, size=2)
        self.b = rng.uniform(0, 2 * self.m, size=2)

    def frame(self, u: float) -> np.ndarray:
        """The frame at fraction u (0..1) of the shot (float32, noise-free)."""
        u = min(1.0, max(0.0, u))
        x, y = (self.a + (self.b - self.a) * u).round().astype(int)
        w, h = self.size
        return self.canvas[y : y + h, x : x + w].astype(np.float32)


def _render(plan: VideoPlan, path: Path, rng: np.random.Generator) -> None:
    import av  # optional dependency (moments-client[video])

    pictures = [_ShotPicture(s, plan.size, rng) for s in plan.shots]
    bounds = plan.bounds()
    encoder, pix_fmt = CODECS[plan.codec]
    w, h = plan.size
    frames = round(plan.seconds * FPS)

    def shot_frame(i: int, t: float) -> np.ndarray:
        start, end = bounds[i]
        return pictures[i].frame((t - start) / (end - start))

    # bitexact: no random container ids (Matroska's segment UID), so a seed gives the same bytes
    with av.open(str(path), mode="w", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream(encoder, rate=FPS)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        # The same bytes for a seed, measured: one encoder thread (x264's output changed on a busy machine),
        # x264 without macroblock-tree rate control (its output changed from one encode to the next in one
        # process), libvpx without its real-time deadline (which adapts to the wall clock).
        stream.codec_context.thread_count = 1
        if plan.codec == "h264":
            stream.options = {"x264-params": "mbtree=0"}
        elif plan.codec == "vp9":
            stream.options = {"deadline": "good", "cpu-used": "8"}
        for n in range(frames):
            t = (n + 0.5) / FPS  # the middle of the frame's display time
            i = next(k for k, (_, end) in enumerate(bounds) if t < end or k == len(bounds) - 1)
            image = shot_frame(i, t)
            start, end = bounds[i]
            half = FADE_S / 2
            if i + 1 < len(bounds) and plan.shots[i + 1].enter == "fade" and t > end - half:
                alpha = (t - (end - half)) / FADE_S
                image = image * (1 - alpha) + shot_frame(i + 1, t) * alpha
            elif i > 0 and plan.shots[i].enter == "fade" and t < start + half:
                alpha = (t - (start - half)) / FADE_S
                image = shot_frame(i - 1, t) * (1 - alpha) + image * alpha
            flicker = rng.uniform(0.97, 1.03)
            noisy = image * flicker + rng.normal(0, NOISE_SIGMA, size=(h, w, 1)).astype(np.float32)
            frame = av.VideoFrame.from_ndarray(np.clip(noisy + 0.5, 0, 255).astype(np.uint8), format="rgb24")
            frame.pts, frame.time_base = n, Fraction(1, FPS)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _slug(text: str) -> str:
    return "-".join(text.split()[1:])  # "a red circle" -> "red-circle"


def write_corpus(out_dir: str | Path, seed: int = 0, plans: Sequence[VideoPlan] = PLANS) -> Path:
    """Write the videos, the query images and ``set.json`` into ``out_dir``; returns the set's path."""
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    (out / "queries").mkdir(parents=True, exist_ok=True)
    videos: list[dict[str, Any]] = []
    by_caption: dict[str, list[dict[str, Any]]] = {}
    aspect_of: dict[str, str] = {}
    for index, plan in enumerate(plans):
        rel = f"videos/{plan.id}{SUFFIX[plan.codec]}"
        _render(plan, out / rel, np.random.default_rng([seed, index]))
        aspect_of[plan.id] = plan.aspect
        transitions = sorted({s.enter for s in plan.shots[1:]}) or ["none"]
        videos.append(
            {
                "id": plan.id,
                "path": rel,
                "metadata": {"encoding": plan.codec, "aspect": plan.aspect, "transitions": ",".join(transitions)},
            }
        )
        for cap, spans in relevant_ranges(plan).items():
            by_caption.setdefault(cap, []).extend({"video_id": plan.id, "start_s": a, "end_s": b} for a, b in spans)
    queries: list[dict[str, Any]] = []
    for cap, relevant in sorted(by_caption.items()):
        queries.append({"id": f"text:{_slug(cap)}", "text": cap, "relevant": relevant})
    for k, (cap, relevant) in enumerate(sorted(by_caption.items())):
        _, color, shape = cap.split()
        image = draw(color, shape, 224, np.random.default_rng([seed, 1000 + k]))
        rel = f"queries/{_slug(cap)}.png"
        Image.fromarray(image).save(out / rel)
        queries.append({"id": f"image:{_slug(cap)}", "image": rel, "relevant": relevant})
    # a filtered query: the caption that recurs most, in the 16:9 videos only
    cap, relevant = max(sorted(by_caption.items()), key=lambda kv: len({r["video_id"] for r in kv[1]}))
    wide = [r for r in relevant if aspect_of[r["video_id"]] == "16:9"]
    if wide:
        queries.append(
            {
                "id": f"text:{_slug(cap)}:16x9",
                "text": cap,
                "filters": {"where": {"aspect": "16:9"}},
                "relevant": wide,
            }
        )
    labelled = {"name": f"shapes-demo corpus (seed {seed})", "videos": videos, "queries": queries}
    path = out / "set.json"
    path.write_text(json.dumps(labelled, indent=2) + "\n")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m moments_client.eval.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("out", metavar="OUT_DIR", help="folder for videos/, queries/ and set.json")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    path = write_corpus(args.out, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
