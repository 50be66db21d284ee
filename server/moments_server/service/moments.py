"""Turning ranked frame hits into moments: minimum score, merging adjacent frames, at most N per video."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moments_server.catalog.catalog import Hit

_TOUCH_S = 1e-3  # windows that meet within a millisecond are adjacent
DEFAULT_MERGE_TOLERANCE = 0.05


@dataclass
class Moment:
    video_id: str
    start_s: float
    end_s: float
    best_frame_s: float
    score: float
    metadata: dict[str, Any] = field(default_factory=dict)
    thumbnail: bytes | None = None


def _moment(hit: Hit) -> Moment:
    return Moment(hit.video_id, hit.start_s, hit.end_s, hit.frame_s, hit.score, hit.metadata, hit.thumbnail)


def merge_adjacent(moments: list[Moment], tolerance: float = DEFAULT_MERGE_TOLERANCE) -> list[Moment]:
    """Moments of one video whose windows touch or overlap become one, scored by its best frame.

    A frame joins only while it scores within `tolerance` of the moment's best: the kNN hits of a small or
    filtered library include poor matches, and those should not stretch a moment over unrelated seconds.
    """
    by_video: dict[str, list[Moment]] = {}
    for m in moments:
        by_video.setdefault(m.video_id, []).append(m)
    merged: list[Moment] = []
    for group in by_video.values():
        group.sort(key=lambda m: m.start_s)
        current = group[0]
        for m in group[1:]:
            if m.start_s <= current.end_s + _TOUCH_S and abs(m.score - current.score) <= tolerance:
                best = m if m.score > current.score else current
                current = Moment(
                    current.video_id,
                    current.start_s,
                    max(current.end_s, m.end_s),
                    best.best_frame_s,
                    best.score,
                    best.metadata,
                    best.thumbnail,
                )
            else:
                merged.append(current)
                current = m
        merged.append(current)
    return rank(merged)


def best_per_video(moments: list[Moment]) -> list[Moment]:
    return per_video(moments, 1)


def per_video(moments: list[Moment], limit: int) -> list[Moment]:
    """The best `limit` moments of each video, ranked: one video cannot fill a page (0 = no limit)."""
    ranked = rank(moments)
    if limit <= 0:
        return ranked
    kept: dict[str, int] = {}
    out = []
    for m in ranked:
        if kept.get(m.video_id, 0) < limit:
            kept[m.video_id] = kept.get(m.video_id, 0) + 1
            out.append(m)
    return out


def rank(moments: list[Moment]) -> list[Moment]:
    # Score first; ties broken by video and time so that pages are stable.
    return sorted(moments, key=lambda m: (-m.score, m.video_id, m.start_s))


def to_moments(
    hits: list[Hit],
    min_score: float | None,
    merge: bool,
    group: bool,
    tolerance: float = DEFAULT_MERGE_TOLERANCE,
    max_per_video: int = 0,
) -> list[Moment]:
    """Ranked moments of the hits scoring at least min_score; group is max_per_video = 1."""
    moments = [_moment(h) for h in hits if min_score is None or h.score >= min_score]
    if merge:
        moments = merge_adjacent(moments, tolerance)
    return per_video(moments, 1 if group else max_per_video)
