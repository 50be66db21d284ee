"""The skip strategy of `video.decode.sample` keeps the frames the full decode keeps, bit for bit.

Real videos written here with PyAV: every frame is different (a bar moves 2 px per frame over a textured
background, and the background's tint changes every second), so a wrong frame shows in the pixels. Each
case checks the skip strategy against the full decode (times, windows, pixels), the kept frames against
the source (the nearest source frame is the first of each window), and that the skip path really ran.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from moments_server.framing import Framing
from moments_server.video.decode import DecodeStats, SampledFrame, sample

W, H = 96, 64  # sampled at size 64: no scaling, a centre crop of the width
SIZE = 64
FRAMING = Framing(SIZE)


def _image(i: int, t: float, rng_bg: np.ndarray) -> np.ndarray:
    img = rng_bg.copy()
    img[..., int(t) % 3] = np.clip(img[..., int(t) % 3].astype(np.int16) + 90, 0, 255).astype(np.uint8)
    x = (16 + 2 * i) % (W - 32) + 16  # inside the centre crop
    img[:, x : x + 2] = 255
    return img


def write_video(
    path: Path,
    encoder: str,
    times: list[float],
    options: dict[str, str] | None = None,
    rotation: int = 0,
    all_key: bool = False,
    rate: int = 30,
) -> list[np.ndarray]:
    """Write frames shown at `times` (seconds); returns the source images in order."""
    rng = np.random.default_rng(0)
    bg = rng.integers(40, 160, (H // 4, W // 4, 3), dtype=np.uint8).repeat(4, 0).repeat(4, 1)
    images = [_image(i, t, bg) for i, t in enumerate(times)]
    tb = Fraction(1, 1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=rate)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.time_base = tb
        stream.options = options or {}
        if rotation:
            stream.set_display_rotation(rotation)

        def mux(packets: list[av.Packet]) -> None:
            for p in packets:
                if all_key:
                    p.is_keyframe = True
                container.mux(p)

        for img, t in zip(images, times, strict=True):
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round(t * 1000), tb
            mux(stream.encode(frame))
        mux(stream.encode())
    return images


def cfr(seconds: float, fps: int = 30) -> list[float]:
    return [i / fps for i in range(round(seconds * fps))]


def first_of_windows(times: list[float], fps: float) -> list[int]:
    out, last = [], -1
    for i, t in enumerate(times):
        slot = int(np.floor(round(t, 3) * fps + 1e-6))
        if slot > last:
            out.append(i)
            last = slot
    return out


def compare(path: Path, fps: float, **kw: Any) -> tuple[list[SampledFrame], DecodeStats]:
    """Sample with both strategies; assert the same frames; return the skip strategy's frames and stats."""
    full_stats, skip_stats = DecodeStats(), DecodeStats()
    full = list(sample(path, fps, 0, FRAMING, strategy="full", stats=full_stats, **kw))
    skip = list(sample(path, fps, 0, FRAMING, strategy="skip", stats=skip_stats, **kw))
    assert full_stats.strategy == "full" and full
    assert [(f.index, f.time_s, f.start_s, f.end_s) for f in skip] == [
        (f.index, f.time_s, f.start_s, f.end_s) for f in full
    ]
    for a, b in zip(skip, full, strict=True):
        assert np.array_equal(a.rgb, b.rgb), f"pixels differ at {a.time_s} s"
    return skip, skip_stats


def assert_source_frames(frames: list[SampledFrame], images: list[np.ndarray], expected: list[int]) -> None:
    """Each kept frame is, of its neighbours in the source, closest to the expected one."""
    assert len(frames) == len(expected)
    crop = (W - SIZE) // 2
    for f, k in zip(frames, expected, strict=True):
        near = range(max(0, k - 3), min(len(images), k + 4))
        err = {j: np.abs(f.rgb.astype(np.int16) - images[j][:, crop : crop + SIZE]).mean() for j in near}
        assert min(err, key=lambda j: err[j]) == k, (f.time_s, err)


# GOPs of 13 frames, so that kept frames fall mid-GOP (I, P and B-frames), not only on keyframes
H264_GOP = {"g": "13", "bf": "3"}  # libx264 defaults otherwise (B-pyramid: reference B-frames too)
HEVC_OPEN_GOP = {"x265-params": "log-level=error:keyint=13:min-keyint=13:open-gop=1:bframes=4"}
CASES: dict[str, tuple[str, str, dict[str, str]]] = {
    "h264": ("mp4", "libx264", H264_GOP),
    "h264-one-gop": ("mp4", "libx264", {}),  # x264's default keyint: one GOP, no tail to skip
    # open GOP: CRA keyframes with leading (RASL) pictures, which reference the GOP before
    "hevc": ("mkv", "libx265", HEVC_OPEN_GOP),
    # hidden alt-ref frames (superframes)
    "vp9": ("webm", "libvpx-vp9", {"g": "13", "cpu-used": "8", "lag-in-frames": "16", "auto-alt-ref": "1"}),
    "mpeg4": ("mkv", "mpeg4", {"g": "13", "bf": "2"}),
    # AVI has no presentation timestamps: B-frames would shift every frame's time (the same in both strategies)
    "mpeg4-avi": ("avi", "mpeg4", {"g": "13"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_codecs_keep_the_full_decode_frames(tmp_path: Path, case: str) -> None:
    suffix, encoder, options = CASES[case]
    path = tmp_path / f"v.{suffix}"
    times = cfr(4.0)
    images = write_video(path, encoder, times, options)
    frames, stats = compare(path, 1.0)
    assert_source_frames(frames, images, first_of_windows(times, 1.0))
    assert stats.strategy == "skip" and not stats.fallback, stats
    assert stats.decoded < len(times)


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 10.0, 30.0])
def test_sampling_rates(tmp_path: Path, fps: float) -> None:
    path = tmp_path / "v.mp4"
    times = cfr(6.0)
    images = write_video(path, "libx264", times, H264_GOP)
    frames, stats = compare(path, fps)
    assert_source_frames(frames, images, first_of_windows(times, fps))
    assert stats.strategy == "skip" and not stats.fallback
    if fps < 30:
        assert stats.decoded < len(times)


def test_variable_frame_rate(tmp_path: Path) -> None:
    # bursts 10 ms apart, 33 ms steps, and a 1.4 s still (no frame at all in window 3)
    times, t = [], 0.0
    for i in range(150):
        times.append(round(t, 3))
        t += 1.4 if i == 70 else (0.010 if i % 20 < 5 else 0.033)
    path = tmp_path / "vfr.mkv"
    images = write_video(path, "libx264", times, H264_GOP)
    for fps in (1.0, 4.0):
        frames, stats = compare(path, fps)
        assert_source_frames(frames, images, first_of_windows(times, fps))
        assert stats.strategy == "skip" and not stats.fallback
    assert len({int(f.start_s) for f in frames}) < int(times[-1]) + 1  # a window without any frame


def test_rotated_input(tmp_path: Path) -> None:
    path = tmp_path / "rotated.mp4"
    write_video(path, "libx264", cfr(3.0), H264_GOP, rotation=90)
    frames, stats = compare(path, 2.0)
    assert stats.strategy == "skip" and len(frames) == 6
    # turned upright: the source's vertical bar is now horizontal (a bright row, no bright column)
    f = frames[0].rgb.astype(np.int16).sum(axis=2)
    assert f.mean(axis=1).max() > f.mean(axis=0).max() + 100


def cut(src_path: Path, dst_path: Path, keep: Callable[[int, av.Packet], bool]) -> list[int]:
    """Remux the packets `keep(index, packet)` accepts (a recording joined mid-stream); their pts."""
    with av.open(str(src_path)) as src, av.open(str(dst_path), "w") as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for i, p in enumerate(src.demux(s_in)):
            if p.size and keep(i, p):
                p.stream = s_out
                dst.mux(p)
    with av.open(str(dst_path)) as c:
        return [p.pts for p in c.demux(c.streams.video[0]) if p.size]


def test_stream_cut_at_an_open_gop_keyframe(tmp_path: Path) -> None:
    """HEVC cut at a CRA keyframe: its leading pictures reference the GOP cut off; they show before the
    stream's start, so no strategy keeps them, and the plan holds."""
    whole = tmp_path / "whole.mkv"
    write_video(whole, "libx265", cfr(4.0), HEVC_OPEN_GOP)
    keys = [0]

    def from_second_key(_: int, p: av.Packet) -> bool:
        keys[0] += bool(p.is_keyframe)
        return keys[0] >= 2

    pts = cut(whole, tmp_path / "cut.mkv", from_second_key)
    assert min(pts[:8]) < pts[0]  # leading pictures: shown before the keyframe they follow
    frames, stats = compare(tmp_path / "cut.mkv", 2.0)
    assert stats.strategy == "skip" and not stats.fallback and len(frames) >= 6


def test_stream_cut_mid_gop_falls_back_to_the_full_decode(tmp_path: Path) -> None:
    """h264 cut after its first keyframe: the decoder drops the frames before the next keyframe, so the
    frame planned for the first window never comes out, and the file is decoded in full (same frames)."""
    whole = tmp_path / "whole.mp4"
    write_video(whole, "libx264", cfr(4.0), H264_GOP)
    cut(whole, tmp_path / "cut.mkv", lambda i, _: i >= 5)
    frames, stats = compare(tmp_path / "cut.mkv", 2.0)
    assert stats.strategy == "full" and "planned" in stats.fallback, stats
    assert len(frames) == 8


def test_keyframes_option(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    times = cfr(4.0)
    write_video(path, "libx264", times, {"g": "30", "keyint_min": "30", "sc_threshold": "0"})
    frames, stats = compare(path, 2.0, keyframes=True)
    assert [f.time_s for f in frames] == [0.0, 1.0, 2.0, 3.0]
    assert [(f.start_s, f.end_s) for f in frames[:3]] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert frames[3].start_s == 3.0 and frames[3].end_s == pytest.approx(4.0, abs=0.01)  # the stream's end
    assert stats.strategy == "skip" and stats.sent == stats.decoded == 4


def test_max_frames_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(4.0), H264_GOP)
    seen: list[int] = []
    stats = DecodeStats()
    frames = list(sample(path, 2.0, 3, FRAMING, on_decoded=seen.append, stats=stats))
    assert [f.start_s for f in frames] == [0.0, 0.5, 1.0] and stats.kept == 3
    assert seen[-1] == stats.decoded < 60  # reports the frames the decoder returned
