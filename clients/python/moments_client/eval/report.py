"""An eval report (from :func:`moments_client.eval.runner.run_eval`) as readable tables: rich for the terminal,
Markdown for result files."""

from __future__ import annotations

from typing import Any

from rich.table import Table

__all__ = ["COLUMNS", "aggregate_table", "markdown", "misses", "query_table"]

#: (report key, column title) of the aggregate table, in order
COLUMNS: tuple[tuple[str, str], ...] = (
    ("hit@1", "HIT@1"),
    ("hit@5", "HIT@5"),
    ("hit@10", "HIT@10"),
    ("recall@5", "R@5"),
    ("recall@10", "R@10"),
    ("map", "mAP"),
    ("ndcg@10", "nDCG@10"),
    ("mrr", "MRR"),
    ("iou@1", "IoU@1"),
    ("best_frame@1", "frame@1"),
)


def _options_line(report: dict[str, Any]) -> str:
    o = report["options"]
    parts = [f"top_k={o['top_k']}", f"merge={'on' if o['merge_adjacent'] else 'off'}"]
    if o.get("merge_tolerance") is not None:
        parts.append(f"merge_tolerance={o['merge_tolerance']:g}")
    if o.get("group_by_video"):
        parts.append("group_by_video")
    if o.get("min_score") is not None:
        parts.append(f"min_score={o['min_score']:g}")
    if o.get("iou_threshold"):
        parts.append(f"iou_threshold={o['iou_threshold']:g}")
    parts.append("set videos only" if o.get("set_videos_only") else "whole library")
    return ", ".join(parts)


def _title(report: dict[str, Any]) -> str:
    s = report["set"]
    name = f"{s['name']}: " if s.get("name") else ""
    return (
        f"{name}{s['queries']} queries over {s['videos']} videos ({s['video_seconds']:g} s), "
        f"{report['server']['model']} at {report['target']}; {_options_line(report)}"
    )


def aggregate_table(report: dict[str, Any]) -> Table:
    """Rows all / text / image (those with queries), one column per metric."""
    table = Table(title=_title(report), title_justify="left")
    table.add_column("queries", justify="left")
    table.add_column("n", justify="right")
    for _, title in COLUMNS:
        table.add_column(title, justify="right")
    for kind, agg in report["aggregate"].items():
        if not agg.get("queries"):
            continue
        table.add_row(kind, str(agg["queries"]), *(f"{agg[key]:.3f}" for key, _ in COLUMNS))
    return table


def query_table(report: dict[str, Any], queries: list[dict[str, Any]] | None = None, title: str = "") -> Table:
    """One row per query (every query of the report by default): its metrics and its top moment."""
    queries = report["queries"] if queries is None else queries
    table = Table(title=title or f"{len(queries)} queries", title_justify="left")
    for col, justify in QUERY_COLUMNS:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for q in queries:
        table.add_row(*_query_row(q))
    return table


#: The per-query table's columns (terminal and Markdown) and their justification in the terminal.
QUERY_COLUMNS = (
    ("query", "left"),
    ("kind", "left"),
    ("ranges", "right"),
    ("HIT@1", "right"),
    ("AP", "right"),
    ("nDCG@10", "right"),
    ("IoU@1", "right"),
    ("top moment", "left"),
)


def _query_row(q: dict[str, Any]) -> list[str]:
    """A query's cells under QUERY_COLUMNS: its metrics and its top moment."""
    m = q["metrics"]
    top = q["moments"][0] if q["moments"] else None
    where = f"{top['video_id']} {top['start_s']:.1f}-{top['end_s']:.1f} s" if top else "none"
    if top is not None and top["relevant_index"] is None:
        where += " (not relevant)"
    metrics = [f"{m['hit@1']:.0f}", f"{m['ap']:.3f}", f"{m['ndcg@10']:.3f}", f"{m['iou@1']:.2f}"]
    return [f"{q['id']}: {q['query']}", q["kind"], str(q["relevant_ranges"]), *metrics, where]


def misses(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The queries whose top moment is not relevant, worst AP first."""
    return sorted((q for q in report["queries"] if not q["metrics"]["hit@1"]), key=lambda q: q["metrics"]["ap"])


def markdown(report: dict[str, Any]) -> str:
    """The aggregate table and the per-query table as Markdown."""
    head = "| queries | n | " + " | ".join(t for _, t in COLUMNS) + " |"
    lines = [f"**{_title(report)}**", "", head, "|" + "---|" * (len(COLUMNS) + 2)]
    for kind, agg in report["aggregate"].items():
        if agg.get("queries"):
            lines.append(f"| {kind} | {agg['queries']} | " + " | ".join(f"{agg[k]:.3f}" for k, _ in COLUMNS) + " |")
    lines += ["", "| " + " | ".join(c for c, _ in QUERY_COLUMNS) + " |", "|" + "---|" * len(QUERY_COLUMNS)]
    lines += ["| " + " | ".join(_query_row(q)) + " |" for q in report["queries"]]
    return "\n".join(lines) + "\n"
