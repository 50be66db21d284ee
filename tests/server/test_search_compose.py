"""Composed and tuned queries on shapes-demo over real gRPC: text + image, any of several texts, negative
texts, at most N moments per video, a threshold relative to the best hit, and scores that an exact kNN over
Embed's vectors and the stored frame vectors reproduces."""

from __future__ import annotations

import io
import math
from collections import Counter
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments_server.store.embedded import Engine
from moments_shapes import draw
from tests.server.conftest import Library
from tests.server.test_search import expected_frames, found

Part = pb.QueryPart


def _png(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def search(lib: Library, **kw: object) -> pb.SearchResponse:
    options = kw.pop("options", None)
    request = pb.SearchRequest(**kw)  # type: ignore[arg-type]
    if options is not None:
        request.options.CopyFrom(options)
    return lib.stub.Search(request)


def scores(response: pb.SearchResponse) -> dict[tuple[str, float], float]:
    return {(m.video_id, m.best_frame_s): m.score for m in response.moments}


def embed(lib: Library, *texts: str) -> np.ndarray:
    return np.array([e.values for e in lib.stub.Embed(pb.EmbedRequest(texts=list(texts))).embeddings])


def stored_frames(lib: Library) -> tuple[list[tuple[str, float]], np.ndarray]:
    """Every stored frame vector, read from the store's files (a read replica) as an external kNN would."""
    data = lib.workdir / ("data" if (lib.workdir / "data").exists() else "adb")
    descriptor_set = lib.stub.Info(pb.InfoRequest()).descriptor_set
    engine = Engine(Path(data), replica=True)
    try:
        response, blobs = engine.query(
            [{"FindDescriptor": {"set": descriptor_set, "blobs": True, "results": {"list": ["video_id", "frame_s"]}}}]
        )
    finally:
        engine.close()
    entities = response[0]["FindDescriptor"]["entities"]
    keys = [(str(e["video_id"]), float(e["frame_s"])) for e in entities]
    return keys, np.array([np.frombuffer(blobs[e["_blob_index"]], dtype="<f4") for e in entities])


def assert_same_ranking(response: pb.SearchResponse, keys: list[tuple[str, float]], reference: np.ndarray) -> None:
    """Search's moments are the frames of the reference scores, best first, each with its score."""
    want = sorted(reference, reverse=True)
    by_key = dict(zip(keys, reference, strict=True))
    got = [m.score for m in response.moments]
    assert len(got) == len(keys)
    np.testing.assert_allclose(got, want, atol=1e-5)  # the same order of scores...
    for m in response.moments:  # ...each the frame's own (ties may swap frames of equal score)
        assert math.isclose(m.score, by_key[(m.video_id, m.best_frame_s)], abs_tol=1e-5)


def test_text_and_image_pull_toward_both(library: Library) -> None:
    red = expected_frames(library, "red", "circle")
    green = expected_frames(library, "green", "triangle")
    picture = _png(draw("green", "triangle", 128, rng=7))
    n = len(red | green)
    text_only = set(found(search(library, text="a red circle", top_k=n)))
    image_only = set(found(search(library, image=picture, top_k=n)))
    assert not text_only & green and not image_only & red  # each alone finds one shape only

    both = search(library, parts=[Part(text="a red circle", weight=0.5), Part(image=picture, weight=0.5)], top_k=n)
    assert set(found(both)) == red | green

    # The weights decide which side leads.
    for text_weight, leader in ((0.8, red), (0.2, green)):
        leaning = search(
            library,
            parts=[Part(text="a red circle", weight=text_weight), Part(image=picture, weight=1 - text_weight)],
            top_k=3,
        )
        assert set(found(leaning)) <= leader, (text_weight, found(leaning))

    # The simple form is the general form with one part of weight 1 (0 = unset = 1).
    simple = search(library, text="a blue square", top_k=20)
    general = search(library, parts=[Part(text="a blue square")], top_k=20)
    assert found(simple) == found(general)
    np.testing.assert_allclose([m.score for m in simple.moments], [m.score for m in general.moments], atol=1e-6)


def test_any_of_several_texts(library: Library) -> None:
    red = expected_frames(library, "red", "circle")
    blue = expected_frames(library, "blue", "square")
    n = len(red | blue)
    # One text alone ranks its own frames above all of the other's: at as many hits as it has frames it finds
    # its own and none of the other's. The any-of finds both, each frame scored by its nearer text (below).
    for text, own in (("a red circle", red), ("a blue square", blue)):
        alone = set(found(search(library, text=text, top_k=len(own))))
        assert alone == own, (text, sorted(alone - own))
    either = search(library, any_texts=["a red circle", "a blue square"], top_k=n)
    assert set(found(either)) == red | blue
    # Each frame scores its best similarity to the texts, taken from the single-text searches.
    singles = [scores(search(library, text=t, top_k=20)) for t in ("a red circle", "a blue square")]
    for m in either.moments:
        key = (m.video_id, m.best_frame_s)
        assert math.isclose(m.score, max(s[key] for s in singles), abs_tol=1e-5)
    # The plain query is one more alternative beside any_texts.
    mixed = search(library, text="a red circle", any_texts=["a blue square"], top_k=n)
    assert found(mixed) == found(either)


def test_negative_text_pushes_its_frames_down(library: Library) -> None:
    green = expected_frames(library, "green", "triangle")
    orange = expected_frames(library, "orange", "triangle")
    plain = search(library, text="a triangle", top_k=20)
    ranks = {key: i for i, key in enumerate(found(plain))}
    assert min(ranks[k] for k in green) < min(ranks[k] for k in orange)  # a green triangle leads without it

    # The negative's strength from the data (similarities are the model's own scale): a margin that leaves
    # every orange frame alone, a weight that pulls every green one below the best orange one if applied.
    keys, vectors = stored_frames(library)
    negative = embed(library, "a green shape")[0]
    closeness = dict(zip(keys, vectors @ negative, strict=True))
    margin = max(closeness[k] for k in orange) + 0.01
    assert all(closeness[k] > margin for k in green)  # "a green shape" is nearer the green triangles
    before = scores(plain)
    best_orange = max(before[k] for k in orange)
    weight = max((before[k] - best_orange + 0.05) / (closeness[k] - margin) for k in green)
    options = pb.SearchOptions(negative_margin=margin, negative_weight=weight)
    pushed = search(library, text="a triangle", negative_texts=["a green shape"], top_k=20, options=options)
    ranks_after = {key: i for i, key in enumerate(found(pushed))}
    assert max(ranks_after[k] for k in orange) < min(ranks_after[k] for k in green)
    assert min(ranks_after[k] for k in green) > min(ranks[k] for k in green)
    # Frames no closer than the margin to the negative keep their plain score; the others lose
    # weight * (similarity to the negative - margin), the similarity being the stored vector's.
    after = scores(pushed)
    for key, score in after.items():
        penalty = weight * max(0.0, closeness[key] - margin)
        assert math.isclose(score, before[key] - penalty, abs_tol=1e-4), key

    # A short page: its kNN must go deeper than the page, past the pushed-down frames, to rank it exactly.
    for top_k in (1, 2, 3):
        short = search(library, text="a triangle", negative_texts=["a green shape"], top_k=top_k, options=options)
        assert found(short) == found(pushed)[:top_k], top_k


def test_max_per_video_bounds_each_video_and_fills_the_page(library: Library) -> None:
    everything = found(search(library, text="a triangle", top_k=20))
    top6 = Counter(vid for vid, _ in everything[:6])
    assert max(top6.values()) > 2  # one video holds more than two of the six best frames

    capped = search(library, text="a triangle", top_k=6, options=pb.SearchOptions(max_per_video=2))
    per_video = Counter(m.video_id for m in capped.moments)
    assert len(capped.moments) == 6 and max(per_video.values()) == 2
    assert set(per_video) == set(library.videos)  # the page is filled from the other videos
    # Exactly the uncapped ranking with each video's third and later moments left out.
    seen: Counter[str] = Counter()
    want = []
    for vid, s in everything:
        seen[vid] += 1
        if seen[vid] <= 2:
            want.append((vid, s))
    assert found(capped) == want[:6]

    # Pages of the capped ranking: each moment once, in the same order as one large page.
    pages: list[tuple[str, float]] = []
    token = ""
    while True:
        page = search(library, text="a triangle", top_k=2, page_token=token, options=pb.SearchOptions(max_per_video=2))
        pages += found(page)
        token = page.next_page_token
        if not token:
            break
    assert pages == want

    with pytest.raises(grpc.RpcError) as err:
        search(library, text="a triangle", options=pb.SearchOptions(group_by_video=True, max_per_video=3))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_per_video" in (err.value.details() or "")


def test_relative_score_drops_the_tail(library: Library) -> None:
    red = expected_frames(library, "red", "circle")
    everything = search(library, text="a red circle", top_k=20)
    assert len(everything.moments) == 20
    best = everything.moments[0].score
    close = search(library, text="a red circle", top_k=20, options=pb.SearchOptions(relative_score=0.1))
    assert set(found(close)) == red
    assert all(m.score >= best - 0.1 - 1e-6 for m in close.moments)
    assert not close.next_page_token
    # With min_score too, the stricter of the two holds.
    strict = search(
        library, text="a red circle", top_k=20, options=pb.SearchOptions(relative_score=0.5, min_score=best - 0.002)
    )
    assert 0 < len(strict.moments) < len(close.moments)


def test_search_scores_are_an_exact_knn_over_embed_and_stored_vectors(library: Library) -> None:
    keys, vectors = stored_frames(library)
    assert len(keys) == sum(len(expected_frames(library, c, s)) for c, s in _all_shapes(library))
    text = embed(library, "a blue square")[0]
    plain = search(library, text="a blue square", top_k=len(keys))
    assert_same_ranking(plain, keys, vectors @ text)

    # Composed: normalize(sum of weight * embedding); alternatives: the max; negatives: the penalty.
    picture = _png(draw("red", "circle", 128, rng=3))
    image = np.array(library.stub.Embed(pb.EmbedRequest(images=[picture])).embeddings[0].values)
    combined = 0.7 * text + 0.3 * image
    combined /= np.linalg.norm(combined)
    parts = [Part(text="a blue square", weight=0.7), Part(image=picture, weight=0.3)]
    composed = search(library, parts=parts, top_k=len(keys))
    assert_same_ranking(composed, keys, vectors @ combined)

    green, cross = embed(library, "a green triangle", "a cross")
    reference = np.maximum(vectors @ combined, vectors @ green) - 2.0 * np.maximum(0.0, vectors @ cross - 0.1)
    full = search(
        library,
        parts=parts,
        any_texts=["a green triangle"],
        negative_texts=["a cross"],
        top_k=len(keys),
        options=pb.SearchOptions(negative_weight=2.0, negative_margin=0.1),
    )
    assert_same_ranking(full, keys, reference)


def _all_shapes(lib: Library) -> set[tuple[str, str]]:
    return {(seg.color, seg.shape) for segments in lib.videos.values() for seg in segments}


def test_paging_through_a_composed_query_gives_each_moment_once(library: Library) -> None:
    request = {
        "text": "a circle",
        "any_texts": ["a blue square", "a triangle"],
        "negative_texts": ["an orange shape"],
        "options": pb.SearchOptions(max_per_video=3, negative_margin=0.3),
    }
    whole = found(search(library, top_k=30, **request))  # type: ignore[arg-type]
    assert len(whole) == 9  # three videos, three each
    pages: list[tuple[str, float]] = []
    token = ""
    for _ in range(10):
        page = search(library, top_k=4, page_token=token, **request)  # type: ignore[arg-type]
        pages += found(page)
        token = page.next_page_token
        if not token:
            break
    assert pages == whole and len(set(pages)) == len(pages)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"parts": [Part(text="a red circle", weight=float("nan"))]}, "parts[0].weight"),
        ({"parts": [Part(text="a red circle", weight=float("inf"))]}, "parts[0].weight"),
        ({"parts": [Part(text="a red circle", weight=-0.5)]}, "negative_texts"),
        ({"parts": [Part(text="a red circle"), Part()]}, "parts[1] has neither"),
        ({"parts": [Part(text="  ")]}, "parts[0].text is empty"),
        ({"text": "a red circle", "parts": [Part(text="a blue square")]}, "not both"),
        ({"text": "a red circle", "any_texts": [""]}, "any_texts[0] is empty"),
        ({"negative_texts": ["a red circle"]}, "need a query"),
        ({"text": "a red circle", "negative_texts": ["x" * 1001]}, "negative_texts[0] has 1001 characters"),
        ({"text": "a red circle", "any_texts": ["a red circle"] * 16}, "at most 16"),
        ({"parts": [Part(image=b"not an image")]}, "parts[0].image"),
        ({"text": "a red circle", "options": pb.SearchOptions(relative_score=-0.1)}, "relative_score"),
        ({"text": "a red circle", "options": pb.SearchOptions(relative_score=float("nan"))}, "relative_score"),
        ({"text": "a red circle", "options": pb.SearchOptions(negative_weight=float("nan"))}, "negative_weight"),
        ({"text": "a red circle", "options": pb.SearchOptions(negative_margin=2.0)}, "negative_margin"),
    ],
)
def test_bad_composed_queries(library: Library, request_fields: dict, message: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        search(library, **request_fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or ""), err.value.details()
    assert search(library, text="a red circle", top_k=1).moments  # still serving


def test_info_reports_the_query_parts_limit(library: Library) -> None:
    assert library.stub.Info(pb.InfoRequest()).limits.max_query_parts == 16
    # At the limit is fine: one plain text and fifteen alternatives.
    response = search(library, text="a red circle", any_texts=["a blue square"] * 15, top_k=3)
    assert len(response.moments) == 3
