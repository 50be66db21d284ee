"""`make load --quick` rehearsed, so that the load run cannot rot: a real server, real searchers and an ingest
loop for about 10 s; no status other than OK, every RPC measured, RSS sampled, both result files written."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bench.load_run import main, rss_verdict


def test_rss_verdict_flat_and_growing() -> None:
    flat = [(float(t), 300.0 + (t % 3)) for t in range(40)]
    assert rss_verdict(flat, warmup_s=8)["flat"] is True
    growing = [(float(t), 300.0 + 4 * t) for t in range(40)]
    v = rss_verdict(growing, warmup_s=8)
    assert v["flat"] is False and v["growth_mib"] > v["allowed_growth_mib"]
    assert rss_verdict(flat[:6], warmup_s=5)["flat"] is None  # too few samples to say


def test_quick_load_run(shapes_model_dir: Path, tmp_path: Path) -> None:
    rc = main(["--quick", "--model-dir", str(shapes_model_dir), "--out", str(tmp_path)])
    (j,) = tmp_path.glob("load-*-quick.json")
    assert j.with_suffix(".md").exists()
    doc = json.loads(j.read_text())
    assert rc == 0 and doc["unexpected_errors"] == 0, doc["error_samples"]
    assert set(doc["rpcs"]) == {"search_text", "search_image", "get_video", "list_videos", "ingest"}
    assert all(s["n"] > 0 and s["p50"] <= s["p99"] for s in doc["rpcs"].values())
    assert len(doc["rss"]["samples"]) >= 5 and doc["rss"]["verdict"]["peak_mib"] > 50
    assert doc["rss"]["verdict"]["flat"] is not None
