"""Which H.264 pictures each picture may reference, read from parameter sets and slice headers (no
macroblock is parsed), so that the skip strategy (video/skip_plan.py) can leave out the reference pictures
no kept frame reaches.

`h264_syntax.StreamParser.packet` reads each packet's slice headers into a `Picture`. `simulate` replays, for
a run of pictures that starts at an IDR, the reference marking and the reference list construction the way
FFmpeg's decoder does them (libavcodec/h264_refs.c, h264_slice.c, h264_picture.c; the spec's 8.2.1, 8.2.4,
8.2.5): for each picture decoded, its POC and the pictures its slices' RefPicList0/1 hold at indices below
num_ref_idx_active. Pictures that are not sent leave a frame_num gap, which FFmpeg fills with "gap frames"
(8.2.5.2; FFmpeg copies the previous reference in and gives it that reference's POC + 2): simulating the sent
pictures alone shows whether each of them still sees the same references (and POC) as in the full decode,
which the caller checks.

Supported: frame pictures only (frame_mbs_only_flag=1), short-term references with sliding window or
MMCO 1, POC types 0 and 2, one slice group, I/P/B slices, one picture per packet. Anything else raises
`Unsupported` and the caller keeps its plan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from moments_server.video.h264_syntax import B_SLICE, P_SLICE, Picture, Slice, Unsupported


@dataclass(slots=True)
class _Ref:
    pic: int  # the picture's index, -1 for a gap frame
    frame_num: int
    poc: int | None  # None: unknown (a gap frame with no reference before it)
    buf: int  # the picture whose pixels it holds (a gap frame shares its predecessor's buffer)


@dataclass(frozen=True)
class Decoded:
    poc: int
    refs: tuple[tuple[int, ...], ...]  # per slice and list, the active entries: a picture, or GAP - frame_num, or NONE


NONE, GAP = -1, -2


def _add_sorted(short: list[_Ref], cur: int, before: bool) -> list[_Ref]:
    """FFmpeg's add_sorted(): POCs below `cur` descending (before) or above it ascending, one per POC."""
    out: list[_Ref] = []
    limit = cur
    while True:
        best: _Ref | None = None
        best_poc = 0
        for r in short:
            if r.poc is None:
                raise Unsupported("a gap frame of unknown POC in a B-slice's list")
            if (
                (r.poc <= limit and (best is None or r.poc >= best_poc))
                if before
                else (r.poc > limit and (best is None or r.poc < best_poc))
            ):
                best, best_poc = r, r.poc
        if best is None:
            return out
        out.append(best)
        limit = best_poc - 1 if before else best_poc


def _ref_lists(short: list[_Ref], s: Slice, frame_num: int, poc: int, max_fn: int) -> list[list[_Ref | None]]:
    """8.2.4 as FFmpeg builds it (h264_refs.c): initial lists, then the modifications."""
    if s.kind == P_SLICE:
        init: list[list[_Ref]] = [list(short)]  # short_ref[] is newest first: descending PicNum (8.2.4.2.1)
    else:  # 8.2.4.2.3; strictly before cur first in list 0, after first in list 1
        init = [
            _add_sorted(short, poc, True) + _add_sorted(short, poc, False),
            _add_sorted(short, poc, False) + _add_sorted(short, poc, True),
        ]
        if len(init[0]) == len(init[1]) > 1 and [r.buf for r in init[0]] == [r.buf for r in init[1]]:
            init[1][0], init[1][1] = init[1][1], init[1][0]  # FFmpeg compares frame buffers
    lists: list[list[_Ref | None]] = []
    for k in range(2 if s.kind == B_SLICE else 1):
        n = s.active[k]
        lst: list[_Ref | None] = [*init[k][:n], *[None] * max(0, n - len(init[k]))]
        pred = frame_num
        for index, (idc, diff) in enumerate(s.mods[k]):  # 8.2.4.3.1
            pred = (pred - (diff + 1)) % max_fn if idc == 0 else (pred + diff + 1) % max_fn
            ref = next((r for r in reversed(short) if r.frame_num == pred), None)
            if index >= n:
                raise Unsupported("more list modifications than active entries")
            if ref is None:  # FFmpeg: "reference picture missing during reorder"
                lst[index] = None
                continue
            i = index
            while i + 1 < n and not (lst[i] is not None and lst[i].frame_num == pred):  # type: ignore[union-attr]
                i += 1
            lst[index + 1 : i + 1] = lst[index:i]
            lst[index] = ref
        lists.append(lst)
    return lists


def _mark(short: list[_Ref], cur: _Ref, mmco: tuple[int, ...] | None, max_fn: int, max_refs: int) -> None:
    """8.2.5.3 (sliding window) or 8.2.5.4 (MMCO 1), as FFmpeg's ff_h264_execute_ref_pic_marking()."""
    if mmco is None:
        if short and len(short) >= max_refs:
            short.pop()
    else:
        for diff in mmco:
            target = (cur.frame_num - diff - 1) % max_fn
            short[:] = [r for r in short if r.frame_num != target]
    short[:] = [cur] + [r for r in short if r.frame_num != cur.frame_num]
    if len(short) > max(max_refs, 1):  # FFmpeg: "number of reference frames exceeds max"
        short.pop()


def simulate(pics: list[Picture], decoded: Iterable[int], gaps: bool) -> dict[int, Decoded]:
    """Decode pictures `decoded` (indices into `pics`, increasing, the first an IDR) as FFmpeg would and
    return each one's POC and references. `gaps`: frame_num gaps are expected (pictures left out)."""
    out: dict[int, Decoded] = {}
    short: list[_Ref] = []  # newest first, as FFmpeg's short_ref[]
    prev_fn = prev_offset = prev_msb = 0
    prev_lsb: int | None = None
    for i in decoded:
        p = pics[i]
        sps = p.sps
        max_fn, max_refs = 1 << sps.log2_max_frame_num, sps.max_num_ref_frames

        if p.idr:
            short.clear()
            prev_fn = prev_offset = prev_msb = 0
            prev_lsb = None
        elif p.frame_num != prev_fn:  # a frame_num gap: FFmpeg's h264_field_start()
            unwrapped = prev_fn - max_fn if prev_fn > p.frame_num else prev_fn
            if p.frame_num - unwrapped > max_refs:
                prev_fn = (p.frame_num - max_refs - 1) % max_fn
            while p.frame_num not in (prev_fn, (prev_fn + 1) % max_fn):
                if not gaps:
                    raise Unsupported("a frame_num gap in the stream itself")
                prev = short[0] if short else None
                prev_fn = (prev_fn + 1) % max_fn
                gap_poc = prev.poc + 2 if prev is not None and prev.poc is not None else None
                _mark(short, _Ref(-1, prev_fn, gap_poc, prev.buf if prev else -1), None, max_fn, max_refs)
        offset = 0 if p.idr else prev_offset + (max_fn if prev_fn > p.frame_num else 0)
        if sps.poc_type == 0:  # 8.2.1.1
            lsb, max_lsb = p.poc_lsb, 1 << sps.log2_max_poc_lsb
            last = lsb if prev_lsb is None else prev_lsb
            msb = prev_msb
            if lsb < last and last - lsb >= max_lsb // 2:
                msb += max_lsb
            elif lsb > last and lsb - last > max_lsb // 2:
                msb -= max_lsb
            poc = msb + lsb + min(0, p.delta_poc_bottom)
        else:  # 8.2.1.3
            poc = 2 * (offset + p.frame_num) - (0 if p.ref else 1)
        refs: list[tuple[int, ...]] = []
        for s in p.slices:
            for lst in _ref_lists(short, s, p.frame_num, poc, max_fn):
                refs.append(tuple(NONE if r is None else r.pic if r.pic >= 0 else GAP - r.frame_num for r in lst))
        out[i] = Decoded(poc, tuple(refs))
        if p.ref:
            _mark(short, _Ref(i, p.frame_num, poc, i), None if p.idr else p.mmco, max_fn, max_refs)
            if sps.poc_type == 0:
                prev_msb, prev_lsb = msb, p.poc_lsb
        prev_fn, prev_offset = p.frame_num, offset
    return out
