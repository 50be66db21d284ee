"""Shot-aware windows: cuts found on real PyAV decodes of generated videos with cuts at known times, and over
real gRPC, moments that follow shots (merged within a shot, snapped to it) on both store paths."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import av
import grpc
import numpy as np
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import Segment, write_shapes_video
from moments_server.framing import Framing
from moments_server.video.decode import DecodeStats, SampledFrame, sample
from moments_server.video.shots import ShotDetector
from tests import shot_corpus
from tests.live import LiveServer
from tests.server.conftest import store_for

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross"), ("purple", "circle")]
SECONDS = [2.4, 3.3, 1.9, 2.7, 1.5]  # cuts at 2.4, 5.7, 7.6 and 10.3 s


class Seeing(ShotDetector):
    """The detector, noting the time of every frame it is given (the decoded frames)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[float] = []

    def feed(self, frame: av.VideoFrame, time_s: float) -> bool:
        self.seen.append(time_s)
        return super().feed(frame, time_s)


def _frames(
    path: Path, strategy: str, fps: float = 1.0, detect_fps: float = 0.0
) -> tuple[list[SampledFrame], DecodeStats, list[float]]:
    stats = DecodeStats()
    detector = Seeing()
    frames = list(
        sample(path, fps, 0, Framing(64), strategy=strategy, stats=stats, shots=detector, detect_fps=detect_fps)  # type: ignore[arg-type]
    )
    return frames, stats, detector.seen


def _check_follows_shots(frames: list[SampledFrame], cuts: list[float], duration: float) -> None:
    """No clip spans a cut, clips are ordered and disjoint, every shot has a frame, shots are numbered in
    order and start at their cut."""
    for f in frames:
        assert f.start_s <= f.time_s < f.end_s
        assert not any(f.start_s < c < f.end_s - 1e-9 for c in cuts), (f, cuts)
    for a, b in pairwise(frames):
        assert a.end_s <= b.start_s + 1e-9
        assert b.shot in (a.shot, a.shot + 1)
    starts = {f.shot: f.shot_start_s for f in frames}
    assert sorted(starts) == list(range(len(cuts) + 1))
    assert [starts[k] for k in range(1, len(cuts) + 1)] == pytest.approx(cuts, abs=1e-6)
    # the last window ends with the stream where the container says when (not WebM: at the window's end)
    assert duration - 0.05 <= frames[-1].end_s <= duration + 1.0


@pytest.mark.parametrize(
    ("codec", "suffix", "fps", "gop"),
    [("h264", "mp4", 10, None), ("h264", "mp4", 25, "12"), ("vp9", "webm", 25, None), ("mpeg4", "avi", 10, None)],
)
@pytest.mark.parametrize(("strategy", "detect_fps"), [("skip", 0.0), ("skip", 4.0), ("full", 0.0)])
def test_hard_cuts_are_found_within_a_decoded_frame(
    tmp_path: Path, codec: str, suffix: str, fps: int, gop: str | None, strategy: str, detect_fps: float
) -> None:
    path = tmp_path / f"v.{suffix}"
    options = {"g": gop, "keyint_min": gop, "sc_threshold": "0"} if gop else None  # keyframes NOT at the cuts
    schedule = write_shapes_video(
        path, SHAPES, seconds_each=SECONDS, fps=fps, size=(256, 192), codec=codec, codec_options=options
    )
    truth = [s.start_s for s in schedule[1:]]
    frames, stats, seen = _frames(path, strategy, detect_fps=detect_fps)
    assert stats.strategy == strategy and not stats.fallback
    if strategy == "full":
        assert len(seen) == sum(round(d * fps) for d in SECONDS)
    cuts = sorted({f.shot_start_s for f in frames if f.shot > 0})
    assert len(cuts) == len(truth), (cuts, truth)
    for found, true in zip(cuts, truth, strict=True):
        # the first decoded frame of the new shot (the cut's own frame when the decoder produced it), never
        # more than 1/detect_fps late when decoding for detection
        assert found == min(t for t in seen if t >= true - 1e-6), (cuts, truth)
        assert not detect_fps or found <= true + 1 / detect_fps + 1e-6
    assert stats.cuts == len(truth) and stats.detect_s > 0
    _check_follows_shots(frames, cuts, schedule[-1].end_s)
    # every shot kept its first frame: 1 fps windows plus one frame per cut inside a window
    assert len(frames) == len({int(f.start_s) for f in frames}) + sum(1 for c in cuts if c % 1 > 1e-6)


def test_skip_decoding_sees_every_shot_of_long_gops(tmp_path: Path) -> None:
    """A short shot after the last kept frame of a GOP: the skip plan decodes only keyframes there, so
    without detect_fps the shot goes unseen; decoding detect_fps frames a second finds it (to the frame, along
    the reference chain) and keeps a frame of its own for it (fixed windows have none)."""
    path = tmp_path / "v.mp4"
    shapes = [("red", "circle"), ("blue", "square")]
    opts = {"g": "250", "sc_threshold": "0", "bf": "0"}  # one GOP, no keyframe at the cut
    schedule = write_shapes_video(path, shapes, seconds_each=[4.2, 0.7], fps=10, codec_options=opts)
    short = schedule[1]  # [4.2, 4.9): inside the last window, after its kept frame (4.0)
    frames, stats, _ = _frames(path, "skip", detect_fps=4.0)
    assert stats.strategy == "skip"
    mine = [f for f in frames if f.shot == 1]
    assert len(mine) == 1, frames
    assert (mine[0].start_s, mine[0].end_s) == pytest.approx((short.start_s, short.end_s)), frames
    skipped = DecodeStats()
    blind = list(sample(path, 1.0, 0, Framing(64), shots=ShotDetector(), detect_fps=0.0, stats=skipped))
    assert skipped.decoded < stats.decoded
    assert not any(f.shot > 0 for f in blind)


def test_cross_fades_make_no_cut_outside_the_fade(tmp_path: Path) -> None:
    """Dissolves: the content detector compares consecutive frames, so a gradual cross-fade is often not
    cut at all (documented). What it must not do is cut where nothing changes, and where it cuts, clips
    still follow."""
    path = tmp_path / "fade.mp4"
    fade = 0.6
    schedule = write_shapes_video(path, SHAPES, seconds_each=SECONDS, fps=25, size=(256, 192), fade_s=fade)
    fades = [(s.start_s - fade / 2, s.start_s + fade / 2) for s in schedule[1:]]
    for strategy in ("skip", "full"):
        frames, _, _ = _frames(path, strategy)
        cuts = sorted({f.shot_start_s for f in frames if f.shot > 0})
        assert all(any(a - 1e-6 <= c <= b + 1 / 25 for a, b in fades) for c in cuts), (cuts, fades)
        _check_follows_shots(frames, cuts, schedule[-1].end_s)


def _panning_video(path: Path, seconds: float = 6.0, fps: int = 30, size: tuple[int, int] = (320, 180)) -> None:
    """A camera panning fast over a detailed scene (no cut): every pixel changes from frame to frame."""
    rng = np.random.default_rng(7)
    w, h = size
    blocks = rng.integers(0, 255, (h // 8 + 1, (w + 40 * int(seconds * fps)) // 8 + 1, 3), dtype=np.uint8)
    scene = np.repeat(np.repeat(blocks, 8, axis=0), 8, axis=1)[:h]
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"g": str(2 * fps), "preset": "veryfast"}
        for i in range(int(seconds * fps)):
            rgb = np.ascontiguousarray(scene[:, 6 * i : 6 * i + w])
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_a_panning_camera_is_not_a_cut(tmp_path: Path) -> None:
    """The pixels change as much as at a cut, the colours do not: no shot starts (the skip strategy's frames
    are up to a GOP apart, which made every keyframe a cut before the colour check)."""
    path = tmp_path / "pan.mp4"
    _panning_video(path)
    for strategy in ("skip", "full"):
        frames, _, _ = _frames(path, strategy)
        assert {f.shot for f in frames} == {0}, (strategy, [(f.time_s, f.shot) for f in frames])
    pixels_only = ShotDetector(color_change=0.0)  # the content detector alone
    list(sample(path, 1.0, 0, Framing(64), shots=pixels_only))
    assert pixels_only.cuts, "the pan no longer looks like a cut to the content detector: the test shows nothing"


def test_fixed_windows_stay_without_a_detector(tmp_path: Path) -> None:
    path = tmp_path / "v.mp4"
    write_shapes_video(path, SHAPES, seconds_each=SECONDS, fps=10)
    frames = list(sample(path, 1.0, 0, Framing(64)))
    assert [(f.start_s, f.end_s) for f in frames] == [(float(s), float(s + 1)) for s in range(11)] + [(11.0, 11.8)]
    assert {f.shot for f in frames} == {-1}
    with pytest.raises(ValueError, match="keyframes"):
        list(sample(path, 1.0, 0, Framing(64), keyframes=True, shots=ShotDetector()))


# -- over gRPC -------------------------------------------------------------------------------------------------


@dataclass
class Served:
    stub: pb_grpc.VideoSearchStub
    schedules: dict[str, list[Segment]]  # video id (corpus id + "-shots" / "-fixed") -> true shots


@pytest.fixture(scope="module", params=["embedded", "aperturedb"])
def served(
    request: pytest.FixtureRequest, shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp(f"shots-{request.param}")
    store, listener = store_for(request.param, workdir)
    server = LiveServer(shapes_model_dir, store, workdir)
    channel = grpc.insecure_channel(server.target)
    stub = pb_grpc.VideoSearchStub(channel)
    schedules = {}
    try:
        for seed, spec in enumerate(shot_corpus.CORPUS):
            path, schedule = shot_corpus.write(spec, workdir, seed)
            # UNSPECIFIED is the server's default: shots
            for suffix, windows in (("shots", pb.WINDOWS_UNSPECIFIED), ("fixed", pb.WINDOWS_FIXED)):
                vid = f"{spec.video_id}-{suffix}"
                events = list(stub.Ingest(shot_corpus.ingest_requests(path, vid, windows), timeout=120))
                assert events[-1].WhichOneof("event") == "done", events
                assert events[-1].done.video.shots == (len(schedule) if suffix == "shots" else 0)
                schedules[vid] = schedule
        yield Served(stub, schedules)
    finally:
        channel.close()
        server.stop()
        if listener is not None:
            listener.stop()


def test_merged_moments_follow_shots_better_than_fixed_windows(served: Served) -> None:
    by_mode: dict[str, list[float]] = {"shots": [], "fixed": []}
    for vid, schedule in served.schedules.items():
        by_mode[vid.rsplit("-", 1)[1]] += shot_corpus.ious(served.stub, vid, schedule)
        if vid.endswith("-shots"):
            for seg in schedule:  # a merged moment never leaves its shot
                m = shot_corpus.top_moment(served.stub, vid, seg)
                assert seg.start_s - 1e-6 <= m.start_s and m.end_s <= seg.end_s + 1e-6, (vid, seg, m)
    shots, fixed = shot_corpus.mean(by_mode["shots"]), shot_corpus.mean(by_mode["fixed"])
    assert shots >= 0.85 and shots > fixed, (shots, fixed, by_mode)


def test_moment_span_shot_returns_the_shot(served: Served) -> None:
    for vid, schedule in served.schedules.items():
        for seg in schedule:
            m = shot_corpus.top_moment(served.stub, vid, seg, pb.MOMENT_SPAN_SHOT)
            if vid.endswith("-shots"):
                assert (m.start_s, m.end_s) == pytest.approx((seg.start_s, seg.end_s), abs=1e-6), (vid, seg, m)
            else:  # fixed windows have no shots: the span stays the windows'
                assert m.end_s - m.start_s <= seg.end_s - seg.start_s + 2.0
    # one moment per shot: a whole-video search returns each shot at most once
    vid = "shots-a-shots"
    response = served.stub.Search(
        pb.SearchRequest(
            text="a red circle",
            top_k=20,
            filters=pb.SearchFilters(video_ids=[vid]),
            options=pb.SearchOptions(moment_span=pb.MOMENT_SPAN_SHOT),
        )
    )
    spans = [(m.start_s, m.end_s) for m in response.moments]
    assert len(spans) == len(set(spans)) == len(served.schedules[vid])


def test_bad_windows_options_are_invalid_argument(served: Served) -> None:
    path = Path(__file__)  # never read: the header is refused first

    def header_only(**kw: object) -> Iterator[pb.IngestRequest]:
        yield pb.IngestRequest(header=pb.IngestHeader(video_id="bad", filename=path.name, **kw))  # type: ignore[arg-type]

    cases = [
        dict(sampling=pb.SamplingOptions(windows=pb.WINDOWS_SHOTS, keyframes=True)),
        dict(sampling=pb.SamplingOptions(windows=pb.WINDOWS_SHOTS), mode=pb.INGEST_MODE_LIVE),
        dict(sampling=pb.SamplingOptions(windows=7)),
    ]
    for kw in cases:
        with pytest.raises(grpc.RpcError) as e:
            list(served.stub.Ingest(header_only(**kw), timeout=30))
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT, kw
        assert "windows" in (e.value.details() or "")
    with pytest.raises(grpc.RpcError) as e:
        served.stub.Search(pb.SearchRequest(text="a red circle", options=pb.SearchOptions(moment_span=9)))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
