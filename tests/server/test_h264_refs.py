"""The H.264 reference analysis (video/h264_refs.py) and the skip plan that uses it.

The parser is checked against what the x264 options that wrote the stream imply (slice types, reference
flags, list sizes, frame_num and POC rules of the spec), on MP4 (avcC) and MPEG-TS (Annex B) packets.
The plan is checked the way test_sampling_strategies checks the skip strategy: the frames kept are
those of the full decode, bit for bit, on real videos written here with PyAV, for many x264 options and
sampling rates; and it really leaves reference pictures out where it should, and falls back where the
stream is outside what it models.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import av
import pytest

from moments_server.video.decode import DecodeStats
from moments_server.video.h264_refs import simulate
from moments_server.video.h264_syntax import B_SLICE, I_SLICE, P_SLICE, Picture, StreamParser, Unsupported
from moments_server.video.skip_plan import plan_packets, planned_frames
from tests.server.test_sampling_strategies import cfr, compare, write_video


def x264(params: str, preset: str = "veryfast") -> dict[str, str]:
    return {"preset": preset, "x264-params": f"log-level=error:keyint=60:min-keyint=60:scenecut=0:{params}"}


# The bench's recipe (x264 veryfast: 3 B-frames, B-pyramid, one reference), and variations of it
RECIPE = "bframes=3:b-pyramid=normal:ref=1"
OPTIONS: dict[str, dict[str, str]] = {
    "recipe": x264(RECIPE),
    "x264-defaults": x264("", preset="medium"),  # ref=3, weightp=2, b-pyramid normal, 8x8dct, ...
    "pyramid-strict": x264("bframes=3:b-pyramid=strict:ref=2"),
    "pyramid-none": x264("bframes=2:b-pyramid=none:ref=2"),
    "no-bframes": x264("bframes=0:ref=3"),  # POC type 2
    "weightp-ref4": x264("bframes=3:b-pyramid=normal:ref=4:weightp=2:weightb=1"),
    "slices": x264(f"{RECIPE}:slices=3"),
}


def pictures(path: Path) -> list[tuple[av.Packet, Picture]]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        parser = StreamParser(s.codec_context.extradata)
        return [(p, parser.packet(memoryview(p))) for p in c.demux(s) if p.size]


def check_headers(read: list[tuple[av.Packet, Picture]], max_refs: int, b_frames: bool) -> None:
    """What any x264 stream of these options must show, read back from the headers."""
    pics = [p for _, p in read]
    assert pics[0].idr and pics[0].slices[0].kind == I_SLICE
    sps = pics[0].sps
    assert sps.max_num_ref_frames >= max_refs
    assert sps.poc_type == (0 if b_frames else 2)  # x264 writes POC type 2 when no picture is reordered
    max_fn = 1 << sps.log2_max_frame_num
    expect_fn = 0
    kinds = set()
    for pic in pics:
        if pic.idr:
            expect_fn = 0
        assert pic.frame_num == expect_fn % max_fn  # 7.4.3: +1 after each reference picture
        expect_fn += pic.ref
        for s in pic.slices:
            kinds.add(s.kind)
            if s.kind == P_SLICE:  # (with weightp, x264 lists a reference twice: more entries than refs)
                assert s.active[0] >= 1 and s.active[1] == 0
            elif s.kind == B_SLICE:
                assert s.active[0] >= 1 and s.active[1] >= 1
            else:
                assert s.active == (0, 0) and s.mods == ((), ())
        if pic.mmco is not None:
            assert pic.ref and not pic.idr and pic.mmco
    assert kinds == ({I_SLICE, P_SLICE, B_SLICE} if b_frames else {I_SLICE, P_SLICE})
    # presentation order is POC order within a GOP (8.2.1), and the references exist
    starts = [i for i, p in enumerate(pics) if p.idr] + [len(pics)]
    for a, b in pairwise(starts):
        decoded = simulate(pics, range(a, b), gaps=False)
        by_pts = sorted(range(a, b), key=lambda i: read[i][0].pts or 0)
        assert [decoded[i].poc for i in by_pts] == sorted(d.poc for d in decoded.values())
        assert all(0 <= r < i for i, d in decoded.items() for refs in d.refs for r in refs)


def test_parser_reads_the_recipe(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(3.0), OPTIONS["recipe"])
    read = pictures(path)
    pics = [p for _, p in read]
    check_headers(read, 1, True)
    # B-pyramid: some B pictures are references, the others not; with ref=1, a P's list holds one entry,
    # and after a B reference x264 moves the P before to its index 0 (a list modification)
    bs = [p.ref for p in pics if p.slices[0].kind == B_SLICE]
    assert any(bs) and not all(bs)
    assert all(s.active == (1, 0) for p in pics for s in p.slices if s.kind == P_SLICE)
    assert any(s.mods[0] for p in pics for s in p.slices if s.kind == P_SLICE)
    assert all(p.slices[0].active == (1, 1) for p in pics if p.slices[0].kind == B_SLICE)
    assert any(p.mmco for p in pics)  # x264 drops older references from B-pyramid references
    assert all(bool(p.idr) == bool(pk.is_keyframe) for pk, p in read)


def test_parser_on_x264_options(tmp_path: Path) -> None:
    for name, max_refs, b_frames in (("x264-defaults", 3, True), ("no-bframes", 3, False), ("weightp-ref4", 4, True)):
        path = tmp_path / f"{name}.mp4"
        write_video(path, "libx264", cfr(3.0), OPTIONS[name])
        read = pictures(path)
        pics = [p for _, p in read]
        check_headers(read, max_refs, b_frames)
        assert max(s.active[0] for p in pics for s in p.slices) > 1, name  # several references used
    slices = tmp_path / "slices.mp4"
    write_video(slices, "libx264", cfr(2.0), OPTIONS["slices"])
    read = pictures(slices)
    check_headers(read, 1, True)
    assert all(len(p.slices) == 3 for _, p in read)


def test_parser_reads_annex_b_like_avcc(tmp_path: Path) -> None:
    mp4, ts = tmp_path / "v.mp4", tmp_path / "v.ts"
    write_video(mp4, "libx264", cfr(2.0), OPTIONS["recipe"])
    with av.open(str(mp4)) as src, av.open(str(ts), "w") as dst:
        out = dst.add_stream_from_template(src.streams.video[0])
        for p in src.demux(src.streams.video[0]):
            if p.size:
                p.stream = out
                dst.mux(p)  # the muxer turns the packets into Annex B (h264_mp4toannexb)
    a = [p for _, p in pictures(mp4)]
    b = [p for _, p in pictures(ts)]
    key = [(p.frame_num, p.poc_lsb, p.ref, p.idr, p.mmco, p.slices) for p in a]
    assert [(p.frame_num, p.poc_lsb, p.ref, p.idr, p.mmco, p.slices) for p in b] == key
    assert b[0].keep_sending  # in-band parameter sets: always sent


def test_parser_refuses_interlaced_coding(tmp_path: Path) -> None:
    path = tmp_path / "i.mp4"
    write_video(path, "libx264", cfr(1.0), x264(f"{RECIPE}:interlaced=1"))
    with av.open(str(path)) as c, pytest.raises(Unsupported, match="interlaced"):
        StreamParser(c.streams.video[0].codec_context.extradata)


def nonref_decoded(path: Path, fps: float) -> int:
    """Frames the decoder returns under the plan without the reference analysis."""
    with av.open(str(path)) as c:
        plan = plan_packets(c, fps, False, 0.0, refs=False)
        assert plan is not None and plan.refs == "nonref"
        c.seek(0, any_frame=True)
        return sum(1 for _ in planned_frames(c, c.streams.video[0], plan, DecodeStats()))


@pytest.mark.parametrize("fps", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_kept_frames_are_the_full_decode_frames(tmp_path: Path, name: str, fps: float) -> None:
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(4.0), OPTIONS[name])
    frames, stats = compare(path, fps)
    assert stats.strategy == "skip" and not stats.fallback, stats
    assert stats.refs == "refs" and not stats.refs_note, stats
    assert len(frames) == int(4 * fps)
    nonref = nonref_decoded(path, fps)
    assert stats.decoded <= nonref
    if name in ("recipe", "slices", "pyramid-strict") and fps in (1.0, 2.0):
        # B-pyramid references that no kept frame reaches are left out
        assert stats.unreached > 0 and stats.decoded < nonref, (stats, nonref)


def test_recipe_decodes_the_p_chain_and_few_b_references(tmp_path: Path) -> None:
    """At 1 fps on the recipe (keyframe every 2 s, kept frames mid-GOP at odd seconds): every P before
    a kept frame is decoded (each references the one before), most B references are not."""
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(4.0), OPTIONS["recipe"])
    read = pictures(path)
    frames, stats = compare(path, 1.0)
    assert stats.refs == "refs" and len(frames) == 4
    sent: dict[bool, list[Picture]] = {}
    for refs in (False, True):
        with av.open(str(path)) as c:
            plan = plan_packets(c, 1.0, False, 0.0, refs)
        assert plan is not None
        sent[refs] = [p for (_, p), act in zip(read, plan.action, strict=True) if act in (0, 1) and p.ref]
    kinds = {refs: [s.slices[0].kind for s in pics] for refs, pics in sent.items()}
    assert kinds[True].count(P_SLICE) == kinds[False].count(P_SLICE) > 10
    assert kinds[True].count(B_SLICE) <= kinds[False].count(B_SLICE) // 3, kinds
    assert stats.unreached > kinds[False].count(B_SLICE) // 2


def test_open_gop_keeps_the_plan_where_a_gop_is_not_closed(tmp_path: Path) -> None:
    """x264 open GOP: keyframes after the first are I pictures with a recovery point, not IDR; GOPs
    that do not start with an IDR keep the plan without the analysis, and the frames are the same."""
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(4.0), x264(f"{RECIPE}:open-gop=1"))
    pics = [p for _, p in pictures(path)]
    assert sum(p.idr for p in pics) == 1
    for fps in (1.0, 2.0):
        _, stats = compare(path, fps)
        assert stats.strategy == "skip" and not stats.fallback
        assert stats.refs == "nonref" and "IDR" in stats.refs_note, stats


def test_intra_refresh(tmp_path: Path) -> None:
    """x264 periodic intra refresh: one IDR, then recovery points that the muxer flags as keyframes: no
    analysis past them, and the frames stay those of the full decode (the plan's keyframe check hands
    over to the full decode, as without the analysis)."""
    path = tmp_path / "v.mp4"
    write_video(path, "libx264", cfr(4.0), x264("bframes=0:intra-refresh=1:ref=1"))
    assert sum(p.idr for _, p in pictures(path)) == 1
    for fps in (1.0, 2.0):
        _, stats = compare(path, fps)
        assert stats.refs == "nonref" and "IDR" in stats.refs_note, stats


def test_interlaced_and_other_codecs_keep_the_plan(tmp_path: Path) -> None:
    inter = tmp_path / "i.mp4"
    write_video(inter, "libx264", cfr(3.0), x264(f"{RECIPE}:interlaced=1"))
    _, stats = compare(inter, 1.0)
    assert stats.strategy == "skip" and stats.refs == "nonref" and "interlaced" in stats.refs_note, stats
    hevc = tmp_path / "h.mkv"
    write_video(hevc, "libx265", cfr(3.0), {"x265-params": "log-level=error:keyint=26:bframes=3"})
    _, stats = compare(hevc, 1.0)
    assert stats.strategy == "skip" and stats.refs == "nonref" and stats.refs_note == "not H.264", stats
