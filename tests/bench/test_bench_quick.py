"""The benchmark harness's pure helpers (no model, no server, no speed assertions), so that it cannot rot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.bench.common import (
    Figure,
    Goal,
    hist_diff,
    hist_from_prometheus,
    machine_slug,
    markdown,
    merged,
    percentile,
    summarize,
    write_results,
)
from tests.bench.load import classify, stage_shares
from tests.bench.shots import iou_figures


def test_percentile_matches_linear_interpolation() -> None:
    xs = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert percentile(xs, 0) == 1.0
    assert percentile(xs, 100) == 5.0
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 25) == 2.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(xs, 101)


def test_summarize_reports_milliseconds() -> None:
    s = summarize([0.001, 0.002, 0.003])
    assert s["n"] == 3 and s["p50"] == 2.0 and s["min"] == 1.0 and s["max"] == 3.0
    assert summarize([]) == {"n": 0}


def test_goals_on_value_and_ratio() -> None:
    f = Figure("x", "t", 9.0, "ms", baseline="b", baseline_value=10.0, goal=Goal("≤ 0.85", "<=", 0.85, "ratio"))
    f.evaluate()
    assert f.ratio == 0.9 and f.met is False
    g = Figure("y", "t", 40.0, "ms", goal=Goal("p50 ≤ 50 ms", "<=", 50.0)).evaluate()
    assert g.met is True and g.ratio is None
    h = Figure("z", "t", 0.96, "", goal=Goal("≥ 0.95", ">=", 0.95)).evaluate()
    assert h.met is True
    none = Figure("n", "t", None, "", goal=Goal("≥ 1", ">=", 1.0)).evaluate()
    assert none.met is None
    skipped = Figure("s", "t", None, "", goal=Goal("≥ 1", ">=", 1.0), skipped="no GPU").evaluate()
    assert skipped.met is None
    with pytest.raises(ValueError):
        Goal("bad", "==", 1.0).check(1.0, None)


@pytest.mark.parametrize(
    ("shots", "fixed", "verdicts"),
    [(0.9, 0.7, [True, True]), (0.9, 0.9, [True, False]), (0.95, 0.97, [True, False]), (0.8, 0.7, [False, True])],
)
def test_shot_iou_goal_checks_both_halves(shots: float, fixed: float, verdicts: list[bool]) -> None:
    """Figure 14's IoU goal, >= 0.85 and above fixed windows: each half gives its own verdict."""
    m = {"mean": {"shots": shots, "fixed": fixed, "shot-span": 1.0}, "per_shot": {"shots": {"a": [shots]}}}
    figures = [f.evaluate() for f in iou_figures(m)]
    assert [f.id for f in figures] == ["14.iou", "14.iou.vs-fixed"]
    assert [f.met for f in figures] == verdicts
    assert figures[1].reason == ("better" if verdicts[1] else "NOT better") + " than fixed windows"


def test_prometheus_histogram_buckets_are_de_cumulated() -> None:
    text = "\n".join(
        [
            "# HELP moments_batch_size Items per inference batch",
            'moments_batch_size_bucket{lane="search",le="1.0",tower="text"} 2.0',
            'moments_batch_size_bucket{lane="search",le="2.0",tower="text"} 5.0',
            'moments_batch_size_bucket{lane="search",le="+Inf",tower="text"} 6.0',
            'moments_batch_size_count{lane="search",tower="text"} 6.0',
            'moments_batch_size_sum{lane="search",tower="text"} 20.0',
            'moments_batch_size_bucket{lane="ingest",le="1.0",tower="image"} 9.0',
        ]
    )
    h = hist_from_prometheus(text, "moments_batch_size", {"tower": "text", "lane": "search"})
    assert h == {"le=1": 2.0, "le=2": 3.0, "le=+Inf": 1.0, "count": 6.0, "sum": 20.0}
    assert hist_diff(h, {"le=1": 1.0, "count": 1.0})["le=1"] == 1.0


def test_profile_stacks_are_classified_innermost_first() -> None:
    assert classify("main (x.py:1);sample (moments_server/video/decode.py:9)") == "decode"
    assert classify("run (moments_server/inference/sessions.py:50)") == "embed (onnxruntime)"
    assert classify("query (moments_server/store/embedded/engine.py:3)") == "store"
    assert classify("foo (bar.py:1)") == "other"
    assert classify('process 7:"python -m moments_server --spool-dir /x/grpc";thread (7);f (bar.py:1)') == "other"
    s = stage_shares("a (video/decode.py:1) 3\nb (sessions.py:2) 1\n")
    assert s["samples"] == 4 and s["shares"] == {"decode": 0.75, "embed (onnxruntime)": 0.25}


def test_results_are_written_as_json_and_markdown(tmp_path: Path) -> None:
    meta = {
        "date": "2026-01-02",
        "quick": True,
        "machine": {"cpu_model": "Test CPU @ 2GHz", "cpu_count": 2},
        "model": {"name": "ViT-B-32", "weights": "random"},
        "duration_s": 1.5,
    }
    figs = [
        Figure(
            "1",
            "latency",
            12.5,
            "ms",
            baseline="bare",
            baseline_value=10.0,
            goal=Goal("≤ bare + 3 ms", "<=", 13.0),
            reason="a | b",
        ).evaluate(),
        Figure("7", "gpu", None, "", skipped="no CUDA here"),
        Figure("5", "recall", float("nan"), "", details={"x": (1, 2)}),
    ]
    j, md = write_results(tmp_path, meta, figs)
    assert j.name == f"{machine_slug(meta['machine'])}-2026-01-02-quick.json"
    assert j.name == "2cpu-test-cpu-2ghz-2026-01-02-quick.json"
    doc = json.loads(j.read_text())
    assert doc["meta"]["machine"]["cpu_count"] == 2
    assert doc["figures"][0]["met"] is True and doc["figures"][0]["ratio"] == 1.25
    assert doc["figures"][2]["value"] is None and doc["figures"][2]["details"]["x"] == [1, 2]
    text = md.read_text()
    assert "| 1 | latency | 12.5 ms | bare: 10.0 | 1.25 |" in text
    assert "skipped" in text and "a / b" in text
    assert text == markdown(meta, figs)


def test_merge_replaces_only_the_rerun_figures(tmp_path: Path) -> None:
    meta = {"date": "2026-01-02", "machine": {"cpu_count": 2, "cpu_model": "Test CPU"}, "started_at": "a"}
    first = [
        Figure("A", "a", 1.0, "ms", goal=Goal("a ≤ 2", "<=", 2.0)).evaluate(),
        Figure("B", "b", 5.0, "ms", goal=Goal("b ≤ 2", "<=", 2.0)).evaluate(),
    ]
    write_results(tmp_path, meta, first)
    again = {**meta, "started_at": "b", "only": ["x"], "figure_seconds": {"x": 1.0}}
    m, figs = merged(
        tmp_path,
        again,
        [Figure("B", "b", 1.5, "ms", goal=Goal("b ≤ 2", "<=", 2.0)).evaluate(), Figure("C", "c", 3.0, "ms")],
    )
    assert [(f.id, f.value, f.met) for f in figs] == [("A", 1.0, True), ("B", 1.5, True), ("C", 3.0, None)]
    assert m["started_at"] == "a" and [r["started_at"] for r in m["merged_runs"]] == ["b"]
    j, _ = write_results(tmp_path, m, figs)
    assert [f["id"] for f in json.loads(j.read_text())["figures"]] == ["A", "B", "C"]
    assert merged(tmp_path / "none", again, figs[:1]) == (again, figs[:1])
