"""Run a labelled set against a live server through the public client: ingest it (optionally), search every
query with the options a user would use, score the ranked moments (:mod:`moments_client.eval.metrics`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any

import grpc

from moments_client.client import Client
from moments_client.errors import MomentsError
from moments_client.eval.labels import EvalSet, EvalSetError, Query
from moments_client.eval.metrics import KS, QueryMetrics, Span, aggregate, score_query
from moments_client.types import Moment

__all__ = ["EvalOptions", "ensure_videos", "ingest_set", "run_eval"]

# The server's bound on filters.video_ids; a larger set searches the whole library.
MAX_SCOPE_IDS = 1000


@dataclass(frozen=True)
class EvalOptions:
    """How every query is searched (the public Search options) and scored."""

    top_k: int = 10
    merge_adjacent: bool = False
    merge_tolerance: float | None = None
    group_by_video: bool = False
    min_score: float | None = None
    iou_threshold: float = 0.0
    #: search only the set's videos (queries without their own video_ids); False: the whole library, where
    #: moments of videos outside the set count as not relevant
    set_videos_only: bool = True


def ingest_set(
    client: Client,
    labelled: EvalSet,
    *,
    fps: float = 1.0,
    parallel: int = 2,
    on_done: Callable[[str, float], None] | None = None,
) -> dict[str, float]:
    """Upload every video of the set that has a path (replacing a stored one of the same id), ``parallel``
    at a time; returns {video id: seconds the ingest took}."""
    jobs = []
    for v in labelled.videos:
        path = labelled.video_path(v)
        if path is None:
            continue
        if not path.is_file():
            raise EvalSetError(f"video {v.id!r}: file {path} not found")
        jobs.append((v, path))

    def one(job: Any) -> tuple[str, float]:
        v, path = job
        t = time.perf_counter()
        client.ingest(path, v.id, v.metadata or None, fps=fps, replace=True)
        seconds = time.perf_counter() - t
        if on_done is not None:
            on_done(v.id, seconds)
        return v.id, seconds

    with ThreadPoolExecutor(max(1, parallel)) as pool:
        return dict(pool.map(one, jobs))


def ensure_videos(client: Client, labelled: EvalSet) -> dict[str, float]:
    """Each video of the set as stored on the server: {id: duration_s}; EvalSetError naming the missing ones."""
    durations: dict[str, float] = {}
    missing: list[str] = []
    for v in labelled.videos:
        try:
            durations[v.id] = client.get_video(v.id).duration_s
        except MomentsError as e:
            if e.code != grpc.StatusCode.NOT_FOUND:
                raise
            missing.append(v.id)
    if missing:
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise EvalSetError(
            f"{len(missing)} video(s) of the set are not on the server at {client.target}: {shown}; "
            "run with --ingest to upload them"
        )
    return durations


def _search(client: Client, labelled: EvalSet, q: Query, opts: EvalOptions) -> tuple[list[Moment], float]:
    video_ids = q.filters.video_ids
    if video_ids is None and opts.set_videos_only and len(labelled.videos) <= MAX_SCOPE_IDS:
        video_ids = [v.id for v in labelled.videos]
    t = time.perf_counter()
    result = client.search(
        text=q.text,
        image=labelled.image_bytes(q) if q.image is not None else None,
        top_k=opts.top_k,
        video_ids=video_ids,
        start_s=q.filters.start_s,
        end_s=q.filters.end_s,
        where=q.filters.conditions() or None,
        merge_adjacent=opts.merge_adjacent,
        merge_tolerance=opts.merge_tolerance,
        group_by_video=opts.group_by_video,
        min_score=opts.min_score,
    )
    return list(result), (time.perf_counter() - t) * 1e3


def _query_json(q: Query, moments: list[Moment], m: QueryMetrics, ms: float) -> dict[str, Any]:
    return {
        "id": q.id,
        "kind": q.kind,
        "query": q.text if q.text is not None else q.image,
        "relevant": [r.model_dump() for r in q.relevant],
        "metrics": m.scalars(),
        "relevant_ranges": m.relevant_ranges,
        "returned": m.returned,
        "duplicates": m.duplicates,
        "recall_curve": m.recall,
        "search_ms": round(ms, 2),
        "moments": [
            {
                "video_id": x.video_id,
                "start_s": x.start_s,
                "end_s": x.end_s,
                "best_frame_s": x.best_frame_s,
                "score": round(x.score, 6),
                "relevant_index": c,
            }
            for x, c in zip(moments, m.credited, strict=True)
        ],
    }


def run_eval(
    client: Client,
    labelled: EvalSet,
    opts: EvalOptions,
    *,
    on_query: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Search every query and score it; the report (JSON-ready): ``aggregate`` {all, text, image},
    ``queries`` (each with its metrics and moments), ``options``, ``server``, ``set``."""
    info = client.info()
    durations = ensure_videos(client, labelled)
    per_query: list[dict[str, Any]] = []
    by_kind: dict[str, list[QueryMetrics]] = {"text": [], "image": []}
    for i, q in enumerate(labelled.queries):
        moments, ms = _search(client, labelled, q, opts)
        ranked = [Span(x.video_id, x.start_s, x.end_s, x.best_frame_s) for x in moments]
        relevant = [Span(r.video_id, r.start_s, r.end_s) for r in q.relevant]
        m = score_query(ranked, relevant, iou_threshold=opts.iou_threshold, depth=opts.top_k)
        by_kind[q.kind].append(m)
        per_query.append(_query_json(q, moments, m, ms))
        if on_query is not None:
            on_query(i + 1, len(labelled.queries))
    everything = by_kind["text"] + by_kind["image"]
    return {
        "set": {
            "name": labelled.name,
            "videos": len(labelled.videos),
            "queries": len(labelled.queries),
            "video_seconds": round(sum(durations.values()), 3),
        },
        "target": client.target,
        "server": {"version": info.version, "model": info.model.name, "pretrained": info.model.pretrained},
        "options": {**asdict(opts), "ks": list(KS)},
        "aggregate": {
            "all": aggregate(everything),
            "text": aggregate(by_kind["text"]),
            "image": aggregate(by_kind["image"]),
        },
        "queries": per_query,
    }
