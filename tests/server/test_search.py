"""End to end with shapes-demo: videos with known shapes at known seconds, searched over real gRPC."""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments_shapes import draw
from tests.server.conftest import Library


def expected_frames(lib: Library, color: str, shape: str, videos: list[str] | None = None) -> set[tuple[str, float]]:
    """(video_id, second) of every 1-fps sampled frame that shows the shape."""
    out = set()
    for vid, segments in lib.videos.items():
        if videos is not None and vid not in videos:
            continue
        for seg in segments:
            if (seg.color, seg.shape) == (color, shape):
                out |= {(vid, float(s)) for s in range(int(np.ceil(seg.start_s)), int(np.ceil(seg.end_s)))}
    return out


def found(response: pb.SearchResponse) -> list[tuple[str, float]]:
    return [(m.video_id, m.best_frame_s) for m in response.moments]


@pytest.mark.parametrize(("color", "shape"), [("red", "circle"), ("blue", "square"), ("green", "triangle")])
def test_text_search_finds_the_right_seconds(library: Library, color: str, shape: str) -> None:
    want = expected_frames(library, color, shape)
    response = library.stub.Search(pb.SearchRequest(text=f"a {color} {shape}", top_k=len(want)))
    got = found(response)
    hit = len(want & set(got)) / len(want)
    assert hit >= 0.9, f"{hit:.2f} of {sorted(want)} in {got}"
    scores = [m.score for m in response.moments]
    assert scores == sorted(scores, reverse=True)
    for m in response.moments:
        assert m.start_s <= m.best_frame_s < m.end_s
        assert (
            m.metadata["camera"].string_value
            == dict(cam_north="north", cam_south="south", cam_east="east")[m.video_id.replace("-", "_")]
        )
    assert response.timing.total_ms > 0 and response.timing.inference_ms > 0


def test_filter_by_video_and_time(library: Library) -> None:
    want = expected_frames(library, "red", "circle", ["cam-south"])
    response = library.stub.Search(
        pb.SearchRequest(text="a red circle", top_k=len(want), filters=pb.SearchFilters(video_ids=["cam-south"]))
    )
    assert {vid for vid, _ in found(response)} == {"cam-south"}
    assert len(want & set(found(response))) / len(want) >= 0.9

    # A time range that excludes the red circles entirely: only other frames come back, all inside it.
    response = library.stub.Search(
        pb.SearchRequest(
            text="a red circle", top_k=5, filters=pb.SearchFilters(video_ids=["cam-north"], start_s=2.0, end_s=5.0)
        )
    )
    seconds = [m.best_frame_s for m in response.moments]
    assert seconds and all(2.0 <= s <= 5.0 for s in seconds)
    assert all(m.video_id == "cam-north" for m in response.moments)


def test_metadata_conditions(library: Library) -> None:
    c = pb.Condition
    cases = [
        ([c(key="camera", op=c.EQ, values=[pb.Value(string_value="east")])], {"cam-east"}),
        ([c(key="floor", op=c.GE, values=[pb.Value(number_value=2)])], {"cam-south", "cam-east"}),
        (
            [c(key="camera", op=c.IN, values=[pb.Value(string_value="north"), pb.Value(string_value="south")])],
            {"cam-north", "cam-south"},
        ),
        (
            [
                c(key="camera", op=c.NE, values=[pb.Value(string_value="north")]),
                c(key="floor", op=c.LT, values=[pb.Value(number_value=3)]),
            ],
            {"cam-south"},
        ),
    ]
    for conditions, videos in cases:
        response = library.stub.Search(
            pb.SearchRequest(text="a red circle", top_k=50, filters=pb.SearchFilters(conditions=conditions))
        )
        assert {m.video_id for m in response.moments} == videos, conditions
        want = expected_frames(library, "red", "circle", list(videos))
        assert want <= set(found(response))


def test_merge_adjacent_and_group_by_video(library: Library) -> None:
    merged = library.stub.Search(
        pb.SearchRequest(
            text="a red circle",
            top_k=3,
            options=pb.SearchOptions(merge_adjacent=True, min_score=0.0),
            filters=pb.SearchFilters(video_ids=["cam-north"]),
        )
    )
    best = merged.moments[0]
    # The red circle is on screen for seconds 0-2 of cam-north: both sampled frames merge into one moment.
    assert (best.video_id, best.start_s, best.end_s) == ("cam-north", 0.0, 2.0)
    assert best.best_frame_s in (0.0, 1.0)

    grouped = library.stub.Search(
        pb.SearchRequest(text="a red circle", top_k=10, options=pb.SearchOptions(group_by_video=True))
    )
    ids = [m.video_id for m in grouped.moments]
    assert sorted(ids) == sorted(library.videos)
    for m in grouped.moments:
        assert (m.video_id, m.best_frame_s) in expected_frames(library, "red", "circle")


def test_min_score_and_paging(library: Library) -> None:
    everything = library.stub.Search(pb.SearchRequest(text="a blue square", top_k=20))
    first = library.stub.Search(pb.SearchRequest(text="a blue square", top_k=8))
    assert first.next_page_token
    second = library.stub.Search(pb.SearchRequest(text="a blue square", top_k=8, page_token=first.next_page_token))
    assert found(first) + found(second)[:4] == found(everything)[:12]
    assert not set(found(first)) & set(found(second))
    with pytest.raises(grpc.RpcError) as err:
        library.stub.Search(pb.SearchRequest(text="a red circle", top_k=8, page_token=first.next_page_token))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

    threshold = everything.moments[3].score
    high = library.stub.Search(
        pb.SearchRequest(text="a blue square", top_k=20, options=pb.SearchOptions(min_score=threshold))
    )
    assert len(high.moments) >= 4 and all(m.score >= threshold for m in high.moments)


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def test_image_query_and_thumbnails(library: Library) -> None:
    picture = _png(draw("green", "triangle", 128, rng=7))
    want = expected_frames(library, "green", "triangle")
    response = library.stub.Search(
        pb.SearchRequest(image=picture, top_k=len(want), options=pb.SearchOptions(include_thumbnails=True))
    )
    assert len(want & set(found(response))) / len(want) >= 0.9
    thumb = Image.open(io.BytesIO(response.moments[0].thumbnail_jpeg))
    assert thumb.format == "JPEG" and thumb.size[0] > 0


def test_embed(library: Library) -> None:
    texts = library.stub.Embed(pb.EmbedRequest(texts=["a red circle", "a blue square"]))
    images = library.stub.Embed(
        pb.EmbedRequest(images=[_png(draw("red", "circle", 96, rng=1)), _png(draw("blue", "square", 96, rng=2))])
    )
    t = np.array([e.values for e in texts.embeddings])
    i = np.array([e.values for e in images.embeddings])
    assert t.shape == i.shape == (2, texts.dimensions)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-4)
    sims = i @ t.T
    assert sims[0, 0] > sims[0, 1] and sims[1, 1] > sims[1, 0]
