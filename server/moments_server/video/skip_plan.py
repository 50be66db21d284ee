"""The skip strategy's plan (video/decode.py): a demux-only pass reads every packet's timestamp and keyframe
flag and chooses, per packet, what the decoder does with it (decode it, decode only references, keyframes
only, or not send it), and the planned decode checks that the decoder did what the plan expects. On
H.264 it also reads the slice headers, to leave out the reference pictures no kept frame reaches."""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av

from moments_server.video.h264_refs import GAP, simulate
from moments_server.video.h264_syntax import Picture, StreamParser, Unsupported


@dataclass
class DecodeStats:
    """What one `sample()` call did (filled in as it runs)."""

    strategy: str = ""  # "skip" or "full": the strategy that produced the frames
    fallback: str = ""  # why "skip" handed over to "full", if it did
    packets: int = 0  # video packets in the stream (the skip strategy's plan)
    sent: int = 0  # packets handed to the decoder
    decoded: int = 0  # frames the decoder returned
    kept: int = 0
    refs: str = ""  # "refs": the reference analysis chose the packets; "nonref": it did not (refs_note: why)
    refs_note: str = ""
    unreached: int = 0  # reference pictures before a kept frame that no kept frame reaches (not sent)
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


# What the skip strategy does with each packet: the codec's skip_frame while it decodes it, or not sent
# (_DROP: a whole GOP's tail or GOP; _UNREACHED: a picture no kept frame reaches, mid-GOP).
_KEEP, _REFS, _TAIL, _DROP, _UNREACHED = 0, 1, 2, 3, 4
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
    refs: str = ""  # DecodeStats.refs / refs_note / unreached
    refs_note: str = ""
    unreached: int = 0


def plan_packets(
    container: av.container.InputContainer,
    fps: float,
    keyframes: bool,
    detect_fps: float = 0.0,
    refs: bool = True,
) -> Plan | None:
    """Read every packet's pts and key flag (demux only) and choose what to decode; None when it cannot
    be planned (a packet without pts, or none at all). Leaves the container at its end. `detect_fps` > 0:
    the first frame of each 1/detect_fps window is decoded too (not kept). `refs`: on H.264, read the
    slice headers too and leave out the reference pictures no kept frame reaches (video/h264_refs.py)."""
    pts, keys = array("q"), bytearray()
    stream = container.streams.video[0]
    clock = Clock.of(stream, fps)
    parser: StreamParser | None = None
    pics: list[Picture] = []
    note = "not H.264" if refs else "not asked for"
    if refs and not keyframes and stream.codec_context.name == "h264":
        try:
            parser, note = StreamParser(stream.codec_context.extradata), ""
        except Unsupported as e:
            note = str(e)
    for p in container.demux(stream):
        if p.size == 0:
            continue
        if p.pts is None:
            return None
        pts.append(p.pts)
        keys.append(p.is_keyframe)
        if parser is not None:
            try:
                pics.append(parser.packet(memoryview(p)))
            except Unsupported as e:
                parser, note = None, str(e)
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
    plan = Plan(pts, action, sorted((s, pts[i]) for s, i in first.items()), must_be_key, "nonref", note)
    if parser is not None:
        plan.refs_note = _leave_out_unreached(pics, gop, action)
        plan.refs = "nonref" if plan.refs_note else "refs"
        plan.unreached = action.count(_UNREACHED)
    return plan


def _leave_out_unreached(pics: list[Picture], gop: array, action: bytearray) -> str:
    """Mark _UNREACHED the _REFS packets whose pictures no kept picture reaches (through the pictures its
    slices may reference, transitively), in each GOP that starts with an IDR picture and ends before
    one: nothing outside it references into it. The pictures decoded must then see, under FFmpeg's
    handling of the frame_num gaps left, the same references and POC as in the full decode
    (h264_refs.simulate); where they do not, more pictures are decoded, and where that does not settle,
    the GOP keeps its plan. Returns why no GOP could be analysed ("" when at least one was)."""
    n, notes, done = len(pics), set(), 0
    start = 0
    while start < n:
        end = start
        while end < n and gop[end] == gop[start]:
            end += 1
        a, b = start, end
        start = end
        kept = [i for i in range(a, b) if action[i] == _KEEP]
        if not kept:
            continue
        if not pics[a].idr or (b < n and not pics[b].idr):
            notes.add("a GOP that does not start with an IDR picture")
            continue
        last = max(i for i in range(a, b) if action[i] in (_KEEP, _REFS)) + 1
        try:
            needed = _needed(pics, a, last, kept)
        except Unsupported as e:
            notes.add(str(e))
            continue
        done += 1
        for i in range(a, last):
            if action[i] == _REFS and i not in needed and not pics[i].keep_sending:
                action[i] = _UNREACHED
    return "" if done else "; ".join(sorted(notes)) or "nothing to analyse"


def _needed(pics: list[Picture], a: int, e: int, kept: list[int]) -> set[int]:
    """The pictures of [a, e) (a GOP from its IDR) to decode: see _leave_out_unreached."""
    full = simulate(pics, range(a, e), gaps=False)
    reach = {i: {r for refs in d.refs for r in refs} for i, d in full.items()}
    if any(min(r, default=0) < 0 for r in reach.values()):
        raise Unsupported("a picture references a picture the stream does not hold")
    last_kept = max(kept)
    seeds = {a, *kept}
    seeds.update(i for i in range(a, e) if pics[i].ref and (pics[i].keep_sending or i > last_kept))
    needed: set[int] = set()

    def close(more: set[int]) -> None:
        todo = list(more - needed)
        while todo:
            i = todo.pop()
            if i not in needed:
                needed.add(i)
                todo.extend(reach[i] - needed)

    close(seeds)
    # Pictures sent only to hold their place in the DPB (their POC in a B-slice's list order, their
    # marking): their own references do not matter, as no needed picture shows their pixels.
    placed: set[int] = set()

    def left_out(j: int) -> bool:
        return pics[j].ref and j not in needed and j not in placed

    for _ in range(8):
        order = sorted(needed | placed)
        seen = simulate(pics, order, gaps=True)
        bad = [i for i in order if i in needed and seen[i] != full[i]]
        if not bad:
            return needed | placed
        # the pictures whose gap frames took a place in the lists of a picture that differs (FFmpeg
        # gives a gap frame the POC of the reference before it + 2, which can move it before a needed
        # one in a B list): the latest picture left out with that frame_num
        more: set[int] = set()
        for i in bad:
            for fn in {GAP - r for refs in seen[i].refs for r in refs if r <= GAP}:
                j = next((j for j in range(i - 1, a - 1, -1) if pics[j].frame_num == fn and left_out(j)), -1)
                if j >= 0:
                    more.add(j)
        if not more:  # else those left out before the first that differs: with adaptive marking, or all
            earlier = [j for j in range(a, bad[0]) if left_out(j)]
            more = {j for j in earlier if pics[j].mmco is not None} or set(earlier)
        if not more:
            break
        placed |= more
    raise Unsupported("the pictures kept do not see the references of the full decode")


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
            if act in (_DROP, _UNREACHED):
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
