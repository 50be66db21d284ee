"""Figure 9: decode CPU time per video-second at 1 fps sampling, 30 fps h264 with B-frames: the server's
`video.decode.sample` (strategy "skip": only what the kept frames need) against the full decode of every
frame (strategy "full", the loop it replaced), measured in the same run, alternating, same videos.

- 9.decode: the bench's h264 recipe (keyframe every 2 s, x264 veryfast: 3 B-frames with B-pyramid), the
  videos of figure 3. Goal: ≤ 0.5 × the full decode, with the same frames (times and pixels, checked).
- 9.decode-long-gop: the same content encoded with x264's defaults (preset medium, keyframe every 250
  frames): only non-reference frames can be skipped. Informational.
- 9.decode-keyframes: `keyframes=True` (only keyframes decoded) on the recipe videos. Informational.

CPU time is the process's user + system time (the decoder's threads included), so it is the cost per
video-second on the whole machine, whatever the thread count.
"""

from __future__ import annotations

import resource
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import Figure, Goal, log
from tests.bench.data import VideoSpec, make_video

NEEDS_MODEL = False  # run.py skips the model export when only figures without a model run
SAMPLE_FPS = 1.0
SIZE = 224  # the model's input side (ViT-B-32)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _sample(path: Path, **kw: Any) -> tuple[float, list[Any], Any]:
    from moments_server.framing import Framing
    from moments_server.video.decode import DecodeStats, sample

    stats = DecodeStats()
    c = _cpu()
    frames = list(sample(path, SAMPLE_FPS, 0, Framing(SIZE), stats=stats, **kw))
    return _cpu() - c, frames, stats


def _same(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        (x.time_s, x.start_s, x.end_s) == (y.time_s, y.start_s, y.end_s) and np.array_equal(x.rgb, y.rgb)
        for x, y in zip(a, b, strict=True)
    )


def measure(paths: list[Path], rounds: int, keyframes: bool = False) -> dict[str, Any]:
    """CPU seconds of sampling all `paths`, per strategy, `rounds` times alternating; frames compared."""
    from moments_server.video.decode import probe

    video_s = sum(probe(p).duration_s for p in paths)
    cpu: dict[str, list[float]] = {"full": [], "skip": []}
    reference: list[list[Any]] = []  # the full decode's frames of each video (first round)
    stats: list[dict[str, Any]] = []
    same = True
    for r in range(rounds):
        for strategy in ("full", "skip"):
            total = 0.0
            for k, p in enumerate(paths):
                c, frames, st = _sample(p, strategy=strategy, keyframes=keyframes)
                total += c
                if r == 0 and strategy == "full":
                    reference.append(frames)
                    stats.append({"video": p.name, "full": vars(st).copy()})
                elif r == 0:
                    same = same and _same(reference[k], frames)
                    stats[k]["skip"] = vars(st).copy()
            cpu[strategy].append(total)
        reference.clear()
    full, skip = statistics.median(cpu["full"]), statistics.median(cpu["skip"])
    return {
        "video_s": round(video_s, 3),
        "videos": [p.name for p in paths],
        "rounds": rounds,
        "cpu_s": {k: [round(x, 3) for x in v] for k, v in cpu.items()},
        "full_ms_per_video_s": round(1000 * full / video_s, 2),
        "skip_ms_per_video_s": round(1000 * skip / video_s, 2),
        "same_frames": same,
        "stats": stats,
    }


def h264_config(sizes: dict[str, Any]) -> dict[str, Any]:
    """The first h264 configuration of figure 3 (its videos are this figure's)."""
    return next(c for c in sizes["ingest_configs"] if c["codec"] == "h264")


def long_gop_video(sizes: dict[str, Any]) -> Path:
    from tests.bench.run import VIDEO_FPS

    cfg = h264_config(sizes)
    return make_video(VideoSpec(cfg["width"], cfg["height"], cfg["seconds"], VIDEO_FPS, "h264", 0, True))


def run(ctx: Any) -> list[Figure]:
    from tests.bench.ingest_throughput import config_videos
    from tests.bench.run import VIDEO_FPS

    cfg = h264_config(ctx.sizes)
    rounds = 2 if ctx.quick else 3
    log(f"test videos (cached after the first run): {cfg['label']} x {cfg['videos']}, and x264 defaults")
    recipe = config_videos(cfg, VIDEO_FPS)
    long_gop = [long_gop_video(ctx.sizes)]
    params = {**cfg, "fps": VIDEO_FPS, "sample_fps": SAMPLE_FPS, "size": SIZE, "rounds": rounds}
    figs = []
    for fid, title, paths, keyframes, goal in (
        ("9.decode", f"decode CPU per video-second at 1 fps, {cfg['label']}", recipe, False, True),
        ("9.decode-long-gop", f"the same, {cfg['label']} with x264 defaults (keyint 250)", long_gop, False, False),
        ("9.decode-keyframes", f"the same, keyframes only, {cfg['label']}", recipe, True, False),
    ):
        log(f"  {fid}: {len(paths)} video(s), {rounds} rounds of full and skip")
        m = measure(paths, rounds, keyframes)
        decoded = sum(s["skip"]["decoded"] for s in m["stats"])
        total = sum(s["full"]["decoded"] for s in m["stats"])
        f = Figure(
            fid,
            title,
            m["skip_ms_per_video_s"],
            "ms CPU/video-s",
            baseline='decode every frame (strategy "full", the previous loop), same run',
            baseline_value=m["full_ms_per_video_s"],
            goal=Goal("≤ 0.5 × full decode, same frames", "<=", 0.5, "ratio") if goal else None,
            params={**params, "keyframes": keyframes, "encoder_defaults": paths is long_gop},
            details=m,
        )
        if not m["same_frames"]:
            raise RuntimeError(f"{fid}: the skip strategy kept other frames than the full decode: {m['stats']}")
        f.reason = (
            f"decoded {decoded} of {total} frames, kept frames identical to the full decode (times and "
            "pixels); CPU time on a shared machine is noisy (median of the rounds)"
        )
        figs.append(f)
    return figs
