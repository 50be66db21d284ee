"""The eval metrics against hand-computed examples, and the labelled set's validation (pure: no server)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from moments_client.eval.labels import EvalSetError, load_set
from moments_client.eval.metrics import Span, aggregate, credit, iou, overlaps, score_query


def S(video: str, start: float, end: float, best: float | None = None) -> Span:
    return Span(video, start, end, best)


def test_iou_and_overlap() -> None:
    assert iou(S("a", 0, 1), S("a", 0, 2)) == pytest.approx(0.5)
    assert iou(S("a", 1, 3), S("a", 2, 4)) == pytest.approx(1 / 3)
    assert iou(S("a", 0, 1), S("b", 0, 1)) == 0.0  # another video
    assert iou(S("a", 0, 1), S("a", 1, 2)) == 0.0  # touching is not overlapping
    assert not overlaps(S("a", 0, 1), S("a", 1, 2))
    assert overlaps(S("a", 1.5, 1.5), S("a", 1, 2))  # a zero-length moment within the range
    assert overlaps(S("a", 0, 1), S("a", 0, 4)) and not overlaps(S("a", 0, 1), S("a", 0, 4), iou_threshold=0.5)


def test_a_hand_computed_query() -> None:
    # R = 3 ranges; ranks 1 and 3 find two of them, rank 2 is another video's moment
    relevant = [S("v1", 0, 2), S("v1", 5, 8), S("v3", 0, 1)]
    ranked = [S("v1", 0, 1, 0.5), S("v2", 0, 1), S("v1", 5, 6)]
    m = score_query(ranked, relevant)
    assert m.credited == [0, None, 1]
    assert m.hit == {1: 1.0, 5: 1.0, 10: 1.0}
    assert m.recall_at(1) == pytest.approx(1 / 3) and m.recall_at(5) == pytest.approx(2 / 3)
    assert m.ap == pytest.approx((1 / 1 + 2 / 3) / 3)  # = 5/9
    dcg = 1 / math.log2(2) + 1 / math.log2(4)
    idcg = 1 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert m.ndcg10 == pytest.approx(dcg / idcg)  # 0.7039
    assert m.mrr == 1.0
    assert m.iou1 == pytest.approx(0.5)  # [0,1] vs [0,2]
    assert m.best_frame1 == 1.0
    assert m.duplicates == 0


def test_first_relevant_at_rank_three() -> None:
    m = score_query([S("v", 10, 11), S("v", 20, 21), S("v", 3, 4)], [S("v", 2, 5)])
    assert m.hit[1] == 0.0 and m.hit[5] == 1.0
    assert m.ap == pytest.approx(1 / 3) and m.mrr == pytest.approx(1 / 3)
    assert m.ndcg10 == pytest.approx(1 / math.log2(4))  # 0.5
    assert m.iou1 == 0.0  # the top moment overlaps no range
    assert m.recall == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_two_frames_of_one_range_are_one_find() -> None:
    relevant = [S("v", 0, 2), S("w", 0, 3)]
    frames = score_query([S("v", 0, 1), S("v", 1, 2), S("w", 0, 1)], relevant)
    assert frames.credited == [0, None, 1] and frames.duplicates == 1
    assert frames.ap == pytest.approx((1 + 2 / 3) / 2)
    merged = score_query([S("v", 0, 2), S("w", 0, 3)], relevant)
    assert merged.ap == 1.0 and merged.ndcg10 == pytest.approx(1.0) and merged.iou1 == 1.0
    assert merged.recall_at(2) == 1.0 and frames.recall_at(2) == 0.5


def test_credit_takes_the_best_iou_range_first() -> None:
    relevant = [S("v", 0, 2), S("v", 2, 3)]
    # [1,3]: IoU 1/3 with [0,2], 1/2 with [2,3] -> [2,3]; then [0,1] is left [0,2]
    assert credit([S("v", 1, 3), S("v", 0, 1)], relevant) == [1, 0]


def test_iou_threshold() -> None:
    m = score_query([S("v", 0, 1)], [S("v", 0, 4)], iou_threshold=0.5)
    assert m.hit[1] == 0.0 and m.ap == 0.0
    assert m.iou1 == pytest.approx(0.25)  # reported whatever the threshold


def test_no_moments_and_aggregate() -> None:
    empty = score_query([], [S("v", 0, 1)])
    assert (empty.hit[1], empty.ap, empty.ndcg10, empty.mrr, empty.iou1) == (0.0, 0.0, 0.0, 0.0, 0.0)
    full = score_query([S("v", 0, 1)], [S("v", 0, 1)])
    agg = aggregate([empty, full])
    assert agg["queries"] == 2
    assert agg["hit@1"] == 0.5 and agg["map"] == 0.5 and agg["iou@1"] == 0.5
    assert agg["recall_curve"][0] == 0.5
    with pytest.raises(ValueError):
        score_query([S("v", 0, 1)], [])


# ------------------------------------------------------------------------------------------------ the format


def _write(tmp_path: Path, doc: Any) -> Path:
    path = tmp_path / "set.json"
    path.write_text(json.dumps(doc))
    return path


def _valid() -> dict[str, Any]:
    return {
        "videos": [{"id": "v1", "path": "videos/v1.mp4", "metadata": {"camera": "north", "floor": 2}}, {"id": "v2"}],
        "queries": [
            {"id": "q1", "text": "a red circle", "relevant": [{"video_id": "v1", "start_s": 0, "end_s": 3}]},
            {
                "id": "q2",
                "image": "q.png",
                "filters": {"where": {"floor": {">=": 2}, "camera": "north"}, "video_ids": ["v1"]},
                "relevant": [{"video_id": "v2", "start_s": 1, "end_s": 2.5}],
            },
        ],
    }


def test_a_valid_set_resolves_paths_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "q.png").write_bytes(b"png")
    labelled = load_set(_write(tmp_path, _valid()))
    assert labelled.video_path(labelled.videos[0]) == tmp_path / "videos" / "v1.mp4"
    assert labelled.video_path(labelled.videos[1]) is None
    q1, q2 = labelled.queries
    assert (q1.kind, q2.kind) == ("text", "image")
    assert labelled.image_bytes(q2) == b"png"
    assert q2.filters.conditions() == [("floor", ">=", 2.0), ("camera", "==", "north")]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d["queries"][0].update(image="q.png"),
            "queries[0] (id 'q1'): give exactly one of 'text' and 'image'",
        ),
        (lambda d: d["queries"][0].pop("text"), "queries[0] (id 'q1'): give exactly one of 'text' and 'image'"),
        (
            lambda d: d["queries"][0]["relevant"][0].update(end_s=0),
            "queries[0] (id 'q1').relevant[0]: end_s (0) must be after start_s (0)",
        ),
        (
            lambda d: d["queries"][0].update(relevent=[]),
            "queries[0] (id 'q1').relevent: Extra inputs are not permitted",
        ),
        (lambda d: d["queries"][0].update(relevant=[]), "queries[0] (id 'q1').relevant: List should have at least 1"),
        (
            lambda d: d["queries"][1]["relevant"][0].update(video_id="v9"),
            "queries[1] ('q2').relevant[0]: video 'v9' is not in 'videos'",
        ),
        (lambda d: d["queries"].append(dict(d["queries"][0])), "query id 'q1' is used twice"),
        (
            lambda d: d["videos"][0].update(id="bad id"),
            "videos[0] (id 'bad id').id: video_id 'bad id' must be 1-128 characters of [A-Za-z0-9._:-]",
        ),
        (
            lambda d: d["videos"][1].update(id="v" * 129),
            f"videos[1] (id '{'v' * 129}').id: video_id '{'v' * 129}' must be 1-128",
        ),
        (lambda d: d["videos"][1].update(id=""), "videos[1] (id '').id: video_id '' must be 1-128 characters"),
        (
            lambda d: d["queries"][1]["filters"].update(where={"floor": {"~": 2}}),
            "queries[1] (id 'q2').filters.where.floor",
        ),
    ],
)
def test_invalid_sets_say_where(tmp_path: Path, change: Any, message: str) -> None:
    (tmp_path / "q.png").write_bytes(b"png")
    doc = _valid()
    change(doc)
    with pytest.raises(EvalSetError) as e:
        load_set(_write(tmp_path, doc))
    assert message in str(e.value), str(e.value)
    assert str(tmp_path / "set.json") in str(e.value)


def test_unreadable_sets(tmp_path: Path) -> None:
    with pytest.raises(EvalSetError, match="cannot read"):
        load_set(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(EvalSetError, match="not valid JSON"):
        load_set(bad)
    with pytest.raises(EvalSetError, match="image file"):  # q.png is missing
        load_set(_write(tmp_path, _valid()))
