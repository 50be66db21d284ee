"""Generated videos whose shots do not fall on whole seconds, and the temporal IoU of search moments against
the true shot ranges: shared by tests/server/test_shots.py and the bench figure tests/bench/shots.py."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import Segment, write_shapes_video
from tests.server.conftest import ingest_requests as upload_requests


@dataclass(frozen=True)
class Spec:
    video_id: str
    codec: str
    suffix: str
    fps: int
    shapes: list[tuple[str, str]]  # one shape per shot, none twice in a video (a caption finds its shot)
    seconds: list[float]  # each shot's duration: cuts at 2.4 s, 5.7 s, ...


CORPUS = [
    Spec(
        "shots-a",
        "h264",
        "mp4",
        10,
        [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross"), ("purple", "circle")],
        [2.4, 3.3, 1.9, 2.7, 1.5],
    ),
    Spec(
        "shots-b",
        "vp9",
        "webm",
        25,
        [("orange", "triangle"), ("red", "circle"), ("blue", "square"), ("green", "triangle")],
        [3.28, 1.56, 2.72, 2.2],
    ),
    Spec(
        "shots-c",
        "mpeg4",
        "avi",
        10,
        [("purple", "cross"), ("yellow", "cross"), ("red", "circle"), ("blue", "square")],
        [1.7, 2.6, 3.1, 2.3],
    ),
]


def write(spec: Spec, folder: Path, seed: int = 0) -> tuple[Path, list[Segment]]:
    path = folder / f"{spec.video_id}.{spec.suffix}"
    schedule = write_shapes_video(
        path, spec.shapes, seconds_each=spec.seconds, fps=spec.fps, size=(256, 256), codec=spec.codec, seed=seed
    )
    return path, schedule


def iou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal intersection over union of two [start, end) ranges."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


def ingest_requests(path: Path, video_id: str, windows: int) -> Iterator[pb.IngestRequest]:
    """An upload of the video with the given sampling windows (SHOTS or FIXED)."""
    return upload_requests(path, video_id, sampling=pb.SamplingOptions(windows=windows))


def top_moment(
    stub: pb_grpc.VideoSearchStub, video_id: str, segment: Segment, span: int = pb.MOMENT_SPAN_UNSPECIFIED
) -> pb.Moment:
    response = stub.Search(
        pb.SearchRequest(
            text=f"a {segment.color} {segment.shape}",
            top_k=1,
            filters=pb.SearchFilters(video_ids=[video_id]),
            options=pb.SearchOptions(merge_adjacent=True, moment_span=span),
        ),
        timeout=60,
    )
    assert response.moments, f"no moment for {segment} in {video_id}"
    return response.moments[0]


def ious(
    stub: pb_grpc.VideoSearchStub, video_id: str, schedule: list[Segment], span: int = pb.MOMENT_SPAN_UNSPECIFIED
) -> list[float]:
    """Per shot: the IoU of the top merged moment of its caption against its true range."""
    out = []
    for seg in schedule:
        m = top_moment(stub, video_id, seg, span)
        out.append(iou((m.start_s, m.end_s), (seg.start_s, seg.end_s)))
    return out


def mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else 0.0
