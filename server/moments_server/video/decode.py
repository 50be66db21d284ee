"""Probe and sample videos with PyAV.

Sampling is by time: the frame kept for each 1/fps window is the first frame, in presentation order,
whose time falls in it. Kept frames are brought to the model's input by its framing (framing.py:
swscale straight from the decoder's pixel format, turned upright by the stream's display matrix); frames
not kept are never converted.

The default strategy ("skip", its plan in video/skip_plan.py) decodes only what the kept frames need, and
keeps the same frames, bit for bit, as decoding every frame ("full", kept for comparison and as the
fallback):

1. A demux-only pass (about 1 % of the decode's CPU) reads every packet's timestamp and keyframe flag, so
   the packet of each window's first frame is known before anything is decoded.
2. Packets before a kept one in their GOP go to the decoder with `skip_frame=NONREF`: the codec itself
   drops the frames no other frame references (most B-frames), and decodes the reference chain. On
   H.264, the plan also reads the slice headers (video/h264_refs.py) and, in
   GOPs from an IDR picture to the next, sends only the reference pictures the kept frames can reach
   through the entries their slices' reference lists hold, plus any whose absence would change those
   lists as FFmpeg builds them (its frame_num gap frames take the place of the pictures not sent): on
   the bench's x264 recipe most B-pyramid references are left out (`DecodeStats.refs` says whether
   this ran, `unreached` how many pictures it left out).
3. Packets after the last kept one of a GOP, up to a keyframe that nothing after it reaches past (no
   leading pictures: no later packet of its GOP shows before it), go with `skip_frame=NONKEY`, and GOPs
   that hold no kept frame are not sent at all. This is what seeking would save, without seeking.

The decoder reads `skip_frame` per packet, so it can change per packet (the skip plan decodes without frame
threads: see _decode; frame threads would copy it per packet too).
Every kept frame is checked against the plan (its window's planned timestamp), and every keyframe after
skipped packets must come out as a keyframe; on any surprise (no timestamps, a decoder that drops a
planned frame, a keyframe flag the bitstream does not confirm) the rest is decoded in full from the start
of the file, so the frames kept are still those of "full". Decoding skips nothing else (no loop-filter or
IDCT shortcuts, which would make the kept frames drift).

`keyframes=True` keeps only keyframes (the first of each window): only keyframe packets are decoded, and
each kept frame stands for the time until the next kept one.

With a `ShotDetector` (video/shots.py), every decoded frame also goes to the detector, and windows follow
shots: a window is cut where a shot starts inside it, the shot's first decoded frame is kept too (it
stands for the rest of the window), and no clip spans a cut. A cut is placed at the first decoded frame
after it: exact wherever the decoder produced the frame before the cut too (along reference chains), late
where the skip strategy decoded nothing (after a GOP's last kept frame only keyframes are decoded). With
`detect_fps` > 0 the skip strategy also decodes the first frame of each 1/detect_fps window, so that a cut
is placed within 1/detect_fps of the truth at worst (at about twice the decode's CPU for 4 on h264).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import av.error
import numpy as np

from moments_server.errors import BadVideo
from moments_server.framing import Framing
from moments_server.video.shots import ShotDetector
from moments_server.video.skip_plan import (
    Clock,
    DecodeStats,
    Plan,
    Rewound,
    Surprise,
    plan_packets,
    planned_frames,
)

log = logging.getLogger(__name__)

Strategy = Literal["skip", "full"]


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    codec: str
    container: str
    frame_count: int


@dataclass(frozen=True)
class SampledFrame:
    index: int  # order among the kept frames
    time_s: float  # presentation time of the frame, from the stream start
    start_s: float  # the sampling window this frame stands for
    end_s: float
    rgb: np.ndarray  # (size, size, 3) uint8
    shot: int = -1  # with shot detection: the index of the frame's shot in the video (-1: fixed windows)
    shot_start_s: float = 0.0  # and when that shot starts


def _open(path: Path) -> av.container.InputContainer:
    try:
        # metadata_errors: tags that are not valid UTF-8 (a damaged or hostile file) must not fail the open
        container = av.open(str(path), mode="r", metadata_errors="replace")
    except av.error.FFmpegError as e:
        raise BadVideo(f"cannot read the upload as a video: {getattr(e, 'strerror', None) or e}") from e
    if not container.streams.video:
        container.close()
        raise BadVideo("the upload holds no video stream")
    if container.streams.video[0].codec_context is None:  # a codec id FFmpeg does not know
        container.close()
        raise BadVideo("the upload's video stream is in a codec this server cannot decode")
    return container


def probe(path: Path) -> VideoInfo:
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        fps = float(stream.average_rate or stream.base_rate or stream.guessed_rate or 0)
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        else:
            duration = 0.0
        frames = stream.frames or (round(duration * fps) if fps else 0)
        return VideoInfo(duration, fps, ctx.width, ctx.height, ctx.name, container.format.name, frames)
    finally:
        container.close()


def _all_frames(container: av.container.InputContainer, stream: av.VideoStream) -> Iterator[av.VideoFrame]:
    for packet in container.demux(stream):
        yield from packet.decode()


@dataclass(frozen=True)
class _Pick:
    slot: int
    time_s: float
    rgb: np.ndarray
    cut: bool = False  # a shot starts at this frame


def _decode(
    container: av.container.InputContainer,
    fps: float,
    framing: Framing,
    keyframes: bool,
    plan: Plan | None,
    after_slot: int,
    stats: DecodeStats,
    on_decoded: Callable[[int], None] | None,
    should_stop: Callable[[], bool] | None,
    shots: ShotDetector | None = None,
    after_s: float = -1.0,
) -> Iterator[_Pick]:
    """Decode (all frames, or as `plan` says) and yield the first frame of each window after `after_slot`,
    and with `shots` the first frame of each shot that starts inside a window, after `after_s`."""
    stream = container.streams.video[0]
    # Frame threads pay off where every frame is decoded, not along the skip plan's sparse reference chains,
    # which they cannot decode side by side (and the keyframes at their heads cost most). Measured, 3 x 30 s of
    # the bench's 720p h264 on 2 cores, frame threads vs none: the full decode 22 % less wall time for 7 % more
    # CPU; the skip plan 6 % less wall time for 9 % more CPU. So the skip plan decodes in the calling thread, and
    # a busy server gets its parallelism from decoding uploads side by side (the decoder pool).
    if plan is None:
        stream.thread_type = "AUTO"
    else:
        stream.thread_type, stream.codec_context.thread_count = "NONE", 1
    clock = Clock.of(stream, fps)
    fallback_rate = float(stream.average_rate or 25)
    frames = planned_frames(container, stream, plan, stats) if plan else _all_frames(container, stream)
    wanted = iter(plan.wanted) if plan else None
    last_slot = after_slot
    decoded = 0
    try:
        for frame in frames:
            decoded += 1
            stats.decoded += 1
            if on_decoded is not None and stats.decoded % 16 == 0:
                on_decoded(stats.decoded)
            if should_stop is not None and should_stop():
                return
            t = clock.seconds(frame.pts) if frame.pts is not None else (decoded - 1) / fallback_rate
            slot = clock.slot(t)
            cut = shots is not None and slot >= 0 and shots.feed(frame, max(t, 0.0)) and t > after_s
            if slot <= last_slot or (keyframes and not frame.key_frame):
                if cut and slot >= 0:  # a shot starts inside a window: its first frame stands for the rest
                    yield _Pick(slot, max(t, 0.0), framing.frame(frame), cut=True)
                continue
            if wanted is not None and next(wanted, None) != (slot, frame.pts):
                raise Surprise(f"the frame kept for window {slot} is not the planned one")
            last_slot = slot
            yield _Pick(slot, max(t, 0.0), framing.frame(frame), cut=cut)
        if wanted is not None and next(wanted, None) is not None:
            raise Surprise(f"a planned frame after window {last_slot} did not come out of the decoder")
    except av.error.FFmpegError as e:
        if plan is not None:
            raise Surprise(f"the decoder failed on the planned packets: {e}") from e
        raise BadVideo(f"the video stopped decoding after {stats.decoded} frames: {e}") from e
    if decoded == 0 and plan is None:
        raise BadVideo("the video stream holds no decodable frame")


def _picks(
    path: Path,
    container: av.container.InputContainer,
    fps: float,
    framing: Framing,
    keyframes: bool,
    strategy: Strategy,
    stats: DecodeStats,
    on_decoded: Callable[[int], None] | None,
    should_stop: Callable[[], bool] | None,
    shots: ShotDetector | None,
    detect_fps: float,
) -> Generator[_Pick]:
    """The kept frames, from `container` (opened once: each open costs the probe's decode of a few frames,
    about 6 ms at 360p, which was 15 % of sampling a 6 s clip when plan and decode each opened the file)."""
    last_slot, last_s = -1, -1.0
    if strategy == "skip":
        plan = plan_packets(container, fps, keyframes, detect_fps if shots is not None else 0.0)
        if plan is None:
            stats.fallback = "the stream cannot be planned (a packet has no timestamp, or there is none)"
        else:
            stats.strategy, stats.packets = "skip", len(plan.pts)
            stats.refs, stats.refs_note, stats.unreached = plan.refs, plan.refs_note, plan.unreached
            fresh: av.container.InputContainer | None = None
            try:
                try:
                    container.seek(0, any_frame=True)  # from the first packet; the plan checks the second read
                    source = _decode(
                        container, fps, framing, keyframes, plan, -1, stats, on_decoded, should_stop, shots
                    )
                    first = next(source, None)  # nothing is yielded before the first packet is checked
                except Rewound:
                    fresh = _open(path)
                    if shots is not None:
                        shots.reset()
                    source = _decode(fresh, fps, framing, keyframes, plan, -1, stats, on_decoded, should_stop, shots)
                    first = next(source, None)
                if first is not None:
                    last_slot, last_s = first.slot, first.time_s
                    yield first
                    for pick in source:
                        last_slot, last_s = pick.slot, pick.time_s
                        yield pick
                return
            except (Surprise, Rewound, av.error.FFmpegError) as e:
                stats.fallback = str(e) or "the file could not be read again from its first packet"
                log.warning("sampling %s: %s; decoding the rest in full", path.name, stats.fallback)
            finally:
                if fresh is not None:
                    fresh.close()
        container = _open(path)  # a fresh decoder and demuxer for the full decode
        if shots is not None:
            shots.reset()  # it sees the video again from the start; cuts before last_s were yielded
        try:
            stats.strategy = "full"
            yield from _decode(
                container, fps, framing, keyframes, None, last_slot, stats, on_decoded, should_stop, shots, last_s
            )
        finally:
            container.close()
        return
    stats.strategy = "full"
    yield from _decode(container, fps, framing, keyframes, None, last_slot, stats, on_decoded, should_stop, shots)


def sample(
    path: Path,
    fps: float,
    max_frames: int,
    framing: Framing,
    on_decoded: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    keyframes: bool = False,
    strategy: Strategy = "skip",
    stats: DecodeStats | None = None,
    shots: ShotDetector | None = None,
    detect_fps: float = 0.0,
) -> Iterator[SampledFrame]:
    """Yield one frame per 1/fps window, brought to the model's input by `framing`. Raises BadVideo on corrupt
    input.

    `keyframes`: keep only keyframes (each stands until the next kept one). `strategy`: "skip" decodes
    only what the kept frames need, "full" every frame (same frames; for comparison). `shots`: windows
    follow the shots it finds (see the module's doc; each frame is then yielded once the next one is
    known, where its window may end), the skip strategy decoding at least `detect_fps` frames a second.
    `stats` is filled in as it runs."""
    if shots is not None and keyframes:
        raise ValueError("shot detection needs more than keyframes: sample by time")
    stats = stats if stats is not None else DecodeStats()
    container = _open(path)
    try:
        stream = container.streams.video[0]
        tb = stream.time_base
        info_duration = float(stream.duration * tb) if stream.duration and tb else math.inf
        if info_duration == math.inf and container.duration:
            # WebM/Matroska give the duration on the container only: the last window ends there too
            info_duration = container.duration / av.time_base
    except BaseException:
        container.close()
        raise

    def window_end(slot: int, next_slot: int | None) -> float:
        if keyframes and next_slot is not None:  # a keyframe stands until the next kept one
            return next_slot / fps
        # The last window ends with the stream (when its duration is known and inside the window).
        end = (slot + 1) / fps
        if slot / fps < info_duration and ((keyframes and info_duration < math.inf) or info_duration < end):
            end = info_duration
        return end

    def out(pick: _Pick, next_slot: int | None) -> SampledFrame:
        stats.kept += 1
        return SampledFrame(stats.kept - 1, pick.time_s, pick.slot / fps, window_end(pick.slot, next_slot), pick.rgb)

    def in_shot(pick: _Pick, after: _Pick | None, shot: int, shot_start: float) -> SampledFrame:
        """A frame's window, cut where its shot started inside it and where the next shot starts."""
        stats.kept += 1
        start = pick.time_s if pick.cut and shot > 0 else pick.slot / fps
        end = window_end(pick.slot, None)
        if after is not None and after.cut:
            end = min(end, after.time_s)
        return SampledFrame(stats.kept - 1, pick.time_s, start, end, pick.rgb, shot, shot_start)

    picks = _picks(
        path, container, fps, framing, keyframes, strategy, stats, on_decoded, should_stop, shots, detect_fps
    )
    try:
        if shots is not None:
            yield from _shot_frames(picks, in_shot, max_frames, stats)
            return
        held: _Pick | None = None  # keyframes: the last kept frame waits for the next, where its window ends
        for pick in picks:
            if not keyframes:
                yield out(pick, None)
            elif held is not None:
                yield out(held, pick.slot)
            held = pick if keyframes else None
            if max_frames and stats.kept >= max_frames:
                return
        if held is not None:
            yield out(held, None)
    finally:
        picks.close()
        container.close()
        if shots is not None:
            stats.detect_s, stats.cuts = shots.cpu_s, len(shots.cuts)
        if on_decoded is not None:
            on_decoded(stats.decoded)


def _shot_frames(
    picks: Iterator[_Pick],
    make: Callable[[_Pick, _Pick | None, int, float], SampledFrame],
    max_frames: int,
    stats: DecodeStats,
) -> Iterator[SampledFrame]:
    """Each pick once the next is known (a cut there ends its window), numbered by shot."""
    shot, shot_start = 0, 0.0
    held: tuple[_Pick, int, float] | None = None
    for pick in picks:
        if pick.cut and held is not None:  # (the detector never cuts at the first frame)
            shot, shot_start = shot + 1, pick.time_s
        if held is not None:
            yield make(held[0], pick, held[1], held[2])
            if max_frames and stats.kept >= max_frames:
                return
        held = (pick, shot, shot_start)
    if held is not None:
        yield make(held[0], None, held[1], held[2])
