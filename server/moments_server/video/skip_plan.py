"""The skip strategy's plan (video/decode.py): a demux-only pass reads every packet's timestamp and keyframe
flag and chooses, per packet, what the decoder does with it (decode it, decode only references, keyframes
only, or not send it), and the planned decode checks that the decoder did what the plan expects."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av


@dataclass
class DecodeStats:
    """What one `sample()` call did (filled in as it runs)."""

    strategy: str = ""  # "skip" or "full": the strategy that produced the frames
    fallback: str = ""  # why "skip" handed over to "full", if it did
    packets: int = 0  # video packets in the stream (the skip strategy's plan)
    sent: int = 0  # packets handed to the decoder
    decoded: int = 0  # frames the decoder returned
    kept: int = 0
    detect_s: float = 0.0  # CPU seconds of shot detection (this thread's: scaling for it, the detector)
    cuts: int = 0  # shots found after the first


@dataclass(frozen=True)
class Clock:
    """Stream time of a timestamp, and the sampling window it falls in (one formula for plan and frames)."""

    time_base: Fraction
    start: float
    fps: float

    @classmethod
    def of(cls, stream: av.VideoStream, fps: float) -> Clock:
        tb = stream.time_base or Fraction(1, 90000)
        start = float(stream.start_time * tb) if stream.start_time is not None else 0.0
        return cls(tb, start, fps)

    def seconds(self, pts: int) -> float:
        return float(pts * self.time_base) - self.start

    def slot(self, t: float) -> int:
        return math.floor(t * self.fps + 1e-6)


# What the skip strategy does with each packet: the codec's skip_frame while it decodes it, or not sent.
_KEEP, _REFS, _TAIL, _DROP = 0, 1, 2, 3
_SkipFrame = Literal["DEFAULT", "NONREF", "NONKEY"]
_SKIP_FRAME: dict[int, _SkipFrame] = {_KEEP: "DEFAULT", _REFS: "NONREF", _TAIL: "NONKEY"}


class Surprise(Exception):
    """The decoder did not do what the plan expected; the rest is decoded in full."""


class Rewound(Exception):
    """Seeking back to the start did not reach the first packet (e.g. a Matroska file that begins between
    keyframes seeks to its first cue): the planned decode starts over from a fresh open."""


@dataclass
class Plan:
    pts: array  # every packet's pts, in decode order
    action: bytearray  # _KEEP / _REFS / _TAIL / _DROP per packet
    wanted: list[tuple[int, int]]  # (slot, pts of the frame to keep), by slot
    must_be_key: list[int]  # pts of the keyframes sent after skipped packets


def plan_packets(
    container: av.container.InputContainer, fps: float, keyframes: bool, detect_fps: float = 0.0
) -> Plan | None:
    """Read every packet's pts and key flag (demux only) and choose what to decode; None when it cannot
    be planned (a packet without pts, or none at all). Leaves the container at its end. `detect_fps` > 0:
    the first frame of each 1/detect_fps window is decoded too (not kept)."""
    pts, keys = array("q"), bytearray()
    stream = container.streams.video[0]
    clock = Clock.of(stream, fps)
    for p in container.demux(stream):
        if p.size == 0:
            continue
        if p.pts is None:
            return None
        pts.append(p.pts)
        keys.append(p.is_keyframe)
    n = len(pts)
    if n == 0:
        return None
    first: dict[int, int] = {}  # window -> index of its first packet in presentation order
    seen: dict[int, int] = {}  # the same for the detection windows
    detect = Clock(clock.time_base, clock.start, detect_fps) if detect_fps > 0 else None
    gop = array("q")  # GOP number of each packet (a keyframe starts one)
    for i in range(n):
        gop.append((gop[-1] if i else 0) + (1 if keys[i] and i else 0))
        if keyframes and not keys[i]:
            continue
        t = clock.seconds(pts[i])
        s = clock.slot(t)
        if s < 0:  # before the stream's start time: never kept
            continue
        j = first.get(s)
        if j is None or pts[i] < pts[j]:
            first[s] = i
        if detect is not None:
            d = detect.slot(t)
            j = seen.get(d)
            if j is None or pts[i] < pts[j]:
                seen[d] = i
    keep = set(first.values()) | set(seen.values())
    keeping_gops = {gop[i] for i in keep}
    action = bytearray(n)
    needed = False  # a kept packet later on may reference this one
    lowest_after: int | None = None  # lowest pts after this packet within its GOP
    for i in range(n - 1, -1, -1):
        if i in keep:
            action[i] = _KEEP
            needed = True
        elif keyframes:
            action[i] = _DROP
        elif needed:
            action[i] = _REFS
        else:
            action[i] = _TAIL if gop[i] in keeping_gops else _DROP
        if keys[i]:
            # A clean keyframe: no later packet of its GOP shows before it (no leading pictures, which
            # may reference the GOP before), so nothing from it on needs a packet before it.
            if lowest_after is None or lowest_after > pts[i]:
                needed = False
            lowest_after = None
        else:
            lowest_after = pts[i] if lowest_after is None else min(lowest_after, pts[i])
    skipped = (_TAIL, _DROP)
    must_be_key = sorted(pts[i] for i in range(1, n) if action[i] not in skipped and action[i - 1] in skipped)
    return Plan(pts, action, sorted((s, pts[i]) for s, i in first.items()), must_be_key)


def planned_frames(
    container: av.container.InputContainer, stream: av.VideoStream, plan: Plan, stats: DecodeStats
) -> Iterator[av.VideoFrame]:
    """Decode following the plan; check that keyframes after skipped packets come out as keyframes."""
    ctx = stream.codec_context
    current: _SkipFrame | None = None
    i = 0
    expect = iter(plan.must_be_key)
    next_key = next(expect, None)
    for packet in container.demux(stream):
        if packet.size:
            if i == 0 and (not plan.pts or packet.pts != plan.pts[0]):
                raise Rewound()
            if i >= len(plan.pts) or packet.pts != plan.pts[i]:
                raise Surprise("the second read of the file met other packets than the plan")
            act = plan.action[i]
            i += 1
            if act == _DROP:
                continue
            if _SKIP_FRAME[act] != current:
                current = _SKIP_FRAME[act]
                ctx.skip_frame = current
            stats.sent += 1
        for frame in packet.decode():
            if frame.pts is None:
                raise Surprise("a decoded frame has no timestamp")
            if next_key is not None and next_key < frame.pts:
                raise Surprise(f"the keyframe at pts {next_key} did not come out of the decoder")
            if next_key == frame.pts:
                if not frame.key_frame:
                    raise Surprise(f"the packet flagged key at pts {next_key} is not a keyframe to the decoder")
                next_key = next(expect, None)
            yield frame
