"""Turning ranked frame hits into moments: minimum score, merging adjacent frames (never across a shot cut),
whole shots, at most N per video."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
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
    shot: int | None = None  # shot-aware videos: the shot of the moment's frames
    shot_start_s: float | None = None
    shot_end_s: float | None = None


def _moment(hit: Hit) -> Moment:
    return Moment(
        hit.video_id,
        hit.start_s,
        hit.end_s,
        hit.frame_s,
        hit.score,
        hit.metadata,
        hit.thumbnail,
        hit.shot,
        hit.shot_start_s,
        hit.shot_end_s,
    )


def whole_shots(moments: list[Moment]) -> list[Moment]:
    """The moments of one shot become one: its best frame and score, spanning the shot. Moments without a
    shot (videos with fixed windows) stay as they are. A shot whose end is not stored ends with its last
    moment."""
    by_shot: dict[tuple[str, int], list[Moment]] = {}
    out: list[Moment] = []
    for m in moments:
        if m.shot is None or m.shot_start_s is None:
            out.append(m)
        else:
            by_shot.setdefault((m.video_id, m.shot), []).append(m)
    for group in by_shot.values():
        best = max(group, key=lambda m: m.score)
        start = best.shot_start_s if best.shot_start_s is not None else best.start_s
        end = best.shot_end_s if best.shot_end_s is not None else max(m.end_s for m in group)
        out.append(replace(best, start_s=start, end_s=end))
    return rank(out)


def merge_adjacent(moments: list[Moment], tolerance: float = DEFAULT_MERGE_TOLERANCE) -> list[Moment]:
    """Moments of one video whose windows touch or overlap become one, scored by its best frame.

    A frame joins only while it scores within `tolerance` of the moment's best: the kNN hits of a small or
    filtered library include poor matches, and those should not stretch a moment over unrelated seconds.
    Nor across a shot cut: in shot-aware videos only frames of the same shot join.
    """
    by_video: dict[str, list[Moment]] = {}
    for m in moments:
        by_video.setdefault(m.video_id, []).append(m)
    merged: list[Moment] = []
    for group in by_video.values():
        group.sort(key=lambda m: m.start_s)
        current = group[0]
        for m in group[1:]:
            if (
                m.start_s <= current.end_s + _TOUCH_S
                and abs(m.score - current.score) <= tolerance
                and m.shot == current.shot
            ):
                best = m if m.score > current.score else current
                current = replace(best, start_s=current.start_s, end_s=max(current.end_s, m.end_s))
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
    shots: bool = False,
) -> list[Moment]:
    """Ranked moments of the hits scoring at least min_score; group is max_per_video = 1; `shots`: one
    moment per shot, spanning it (whole_shots)."""
    moments = [_moment(h) for h in hits if min_score is None or h.score >= min_score]
    if shots:
        moments = whole_shots(moments)
    if merge:
        moments = merge_adjacent(moments, tolerance)
    return per_video(moments, 1 if group else max_per_video)
