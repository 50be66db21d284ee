"""Retrieval metrics of ranked moments against labelled ranges (pure functions, no I/O).

The matching rule, which every metric below shares:

* A returned moment *overlaps* a relevant range when both are in the same video and their intersection is
  longer than zero (a zero-length moment overlaps when its instant lies within the range). With an
  ``iou_threshold`` above 0 it must also reach that temporal IoU (intersection over union of the two
  time spans).
* Ranges are credited one-to-one, in rank order: each moment takes the not-yet-credited overlapping range
  with the highest IoU (the earliest listed on ties). A moment is *relevant* when it is credited a range;
  a moment that overlaps only ranges already credited to better-ranked moments is a *duplicate* and counts
  as not relevant (two frames of the same labelled moment are one find, not two).

With ``R`` relevant ranges and ``rel_i`` = 1 when the moment at rank ``i`` (1-based) is relevant:

* ``HIT@k``: 1 when a relevant moment is among the first k, else 0.
* ``recall@k``: relevant moments among the first k / R (the fraction of ranges found).
* ``AP``: sum over relevant ranks i of precision@i, divided by R (ranges never found add 0); mAP is its mean.
* ``nDCG@10``: binary gains, sum of rel_i / log2(i + 1) over i <= 10, divided by the same sum for an ideal
  list (min(R, 10) relevant moments first).
* ``MRR``: 1 / the rank of the first relevant moment (0 when none).
* ``IoU@1``: temporal IoU of the top moment with the relevant range it overlaps best (0 when it overlaps
  none): how well the returned span fits the labelled one, whatever its rank-1 relevance.
* ``best_frame@1``: 1 when the top moment's best frame lies within a relevant range of its video.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "KS",
    "QueryMetrics",
    "Span",
    "aggregate",
    "credit",
    "iou",
    "overlap_s",
    "overlaps",
    "score_query",
]

#: The cut-offs HIT@k is reported at.
KS: tuple[int, ...] = (1, 5, 10)
NDCG_AT = 10


@dataclass(frozen=True)
class Span:
    """A time span of one video: a relevant range, or a returned moment (with its best frame)."""

    video_id: str
    start_s: float
    end_s: float
    best_frame_s: float | None = None

    @property
    def length_s(self) -> float:
        return max(0.0, self.end_s - self.start_s)


def overlap_s(a: Span, b: Span) -> float:
    """Seconds that ``a`` and ``b`` share (0 for different videos)."""
    if a.video_id != b.video_id:
        return 0.0
    return max(0.0, min(a.end_s, b.end_s) - max(a.start_s, b.start_s))


def iou(a: Span, b: Span) -> float:
    """Temporal intersection over union of two spans of the same video (0 for different videos)."""
    inter = overlap_s(a, b)
    union = a.length_s + b.length_s - inter
    return inter / union if union > 0 else 0.0


def overlaps(moment: Span, relevant: Span, iou_threshold: float = 0.0) -> bool:
    """The matching rule (see the module): same video, a shared stretch, and IoU >= ``iou_threshold`` when > 0."""
    if moment.video_id != relevant.video_id:
        return False
    if moment.length_s == 0:
        touches = relevant.start_s <= moment.start_s <= relevant.end_s
    else:
        touches = overlap_s(moment, relevant) > 0
    return touches and (iou_threshold <= 0 or iou(moment, relevant) >= iou_threshold)


def credit(ranked: Sequence[Span], relevant: Sequence[Span], iou_threshold: float = 0.0) -> list[int | None]:
    """For each ranked moment, the index in ``relevant`` of the range it is credited, or None (one-to-one,
    in rank order, best IoU first)."""
    taken: set[int] = set()
    out: list[int | None] = []
    for m in ranked:
        best: int | None = None
        best_iou = -1.0
        for j, r in enumerate(relevant):
            if j in taken or not overlaps(m, r, iou_threshold):
                continue
            v = iou(m, r)
            if v > best_iou:
                best, best_iou = j, v
        if best is not None:
            taken.add(best)
        out.append(best)
    return out


@dataclass
class QueryMetrics:
    """The metrics of one query's ranked moments (see the module for the definitions)."""

    hit: dict[int, float]  # k -> HIT@k
    recall: list[float]  # recall@k for k = 1 .. len(recall)
    ap: float
    ndcg10: float
    mrr: float
    iou1: float
    best_frame1: float
    relevant_ranges: int
    returned: int
    duplicates: int
    credited: list[int | None] = field(default_factory=list)

    def recall_at(self, k: int) -> float:
        """recall@k; past the end of the list, the recall of the whole list."""
        if not self.recall:
            return 0.0
        return self.recall[min(k, len(self.recall)) - 1]

    def scalars(self) -> dict[str, float]:
        """The per-query numbers that are averaged: ``hit@1``, ``recall@5``, ``ap``, ``ndcg@10``, ...
        (recall@k at the same cut-offs as HIT@k)."""
        out = {f"hit@{k}": v for k, v in self.hit.items()}
        out.update({f"recall@{k}": self.recall_at(k) for k in self.hit})
        out.update(
            {
                "ap": self.ap,
                "ndcg@10": self.ndcg10,
                "mrr": self.mrr,
                "iou@1": self.iou1,
                "best_frame@1": self.best_frame1,
            }
        )
        return out


def _dcg(gains: Iterable[int]) -> float:
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def score_query(
    ranked: Sequence[Span],
    relevant: Sequence[Span],
    *,
    iou_threshold: float = 0.0,
    ks: Sequence[int] = KS,
    depth: int | None = None,
) -> QueryMetrics:
    """The metrics of one query: ``ranked`` moments, best first, against its ``relevant`` ranges (at least one).

    ``depth`` is the length of the recall curve (default: the number of moments returned, at least max(ks)).
    """
    if not relevant:
        raise ValueError("a query needs at least one relevant range")
    credited = credit(ranked, relevant, iou_threshold)
    rel = [1 if c is not None else 0 for c in credited]
    n_rel = len(relevant)
    depth = depth if depth is not None else max(len(ranked), *ks)
    found = 0
    recall: list[float] = []
    precision_sum = 0.0
    for i in range(depth):
        if i < len(rel) and rel[i]:
            found += 1
            precision_sum += found / (i + 1)
        recall.append(found / n_rel)
    first = next((i for i, r in enumerate(rel) if r), None)
    ideal = _dcg([1] * min(n_rel, NDCG_AT))
    duplicates = sum(
        1 for m, c in zip(ranked, credited, strict=True) if c is None and any(overlaps(m, r) for r in relevant)
    )
    top = ranked[0] if ranked else None
    iou1 = max((iou(top, r) for r in relevant), default=0.0) if top else 0.0
    best_frame1 = 0.0
    if top is not None and top.best_frame_s is not None:
        t = top.best_frame_s
        best_frame1 = float(any(r.video_id == top.video_id and r.start_s <= t <= r.end_s for r in relevant))
    return QueryMetrics(
        hit={k: float(any(rel[:k])) for k in ks},
        recall=recall,
        ap=precision_sum / n_rel,
        ndcg10=_dcg(rel[:NDCG_AT]) / ideal,
        mrr=1.0 / (first + 1) if first is not None else 0.0,
        iou1=iou1,
        best_frame1=best_frame1,
        relevant_ranges=n_rel,
        returned=len(ranked),
        duplicates=duplicates,
        credited=credited,
    )


def aggregate(metrics: Sequence[QueryMetrics]) -> dict[str, Any]:
    """Means over queries of every scalar (``map`` is the mean AP), the number of ``queries``, and the mean
    ``recall_curve`` (recall@k for k = 1 .. the shortest curve)."""
    if not metrics:
        return {"queries": 0}
    rows = [m.scalars() for m in metrics]
    out: dict[str, Any] = {"queries": len(metrics)}
    for key in rows[0]:
        out["map" if key == "ap" else key] = sum(row[key] for row in rows) / len(rows)
    depth = min(len(m.recall) for m in metrics)
    out["recall_curve"] = [sum(m.recall[k] for m in metrics) / len(metrics) for k in range(depth)]
    return out
