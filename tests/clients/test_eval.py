"""`moments eval` as a user runs it (the CLI, a subprocess) on the generated shapes-demo corpus against a live server.

The floors (tests/bench/eval_quality.py FLOORS) sit ~12-15 % below what today's defaults measure on the 2-core
machine, seed 0, 1 fps, top_k 10:
    unmerged (the Search default)  HIT@1 0.810  mAP 0.806  nDCG@10 0.840  IoU@1 0.266
    merged (--merge)               HIT@1 0.810  mAP 0.849  nDCG@10 0.863  IoU@1 0.726
so a change that hurts ranking or moment spans fails here; the same run with its lists reversed must fail them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from moments_client.eval.corpus import PLANS, write_corpus
from moments_client.eval.metrics import Span, aggregate, score_query
from tests.bench.eval_quality import FLOORS, SEED
from tests.clients.conftest import run_cli
from tests.live import LiveServer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_corpus(tmp_path_factory.mktemp("eval-corpus"), SEED)


@pytest.fixture(scope="module")
def unmerged(server: LiveServer, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("eval-out")
    args = ["eval", str(corpus), "--ingest", "--json", str(out / "r.json"), "--plot", str(out / "r.png")]
    result = run_cli(*args, target=server.target)
    assert result.returncode == 0, result.output
    report = json.loads((out / "r.json").read_text())
    report["_stdout"], report["_png"] = result.stdout, out / "r.png"
    return report


def _below_floors(agg: dict[str, Any], floors: dict[str, float]) -> list[str]:
    return [f"{k} {agg[k]:.3f} < {v}" for k, v in floors.items() if agg[k] < v]


def test_corpus_is_what_its_plans_say(corpus: Path) -> None:
    doc = json.loads(corpus.read_text())
    assert {v["id"] for v in doc["videos"]} == {p.id for p in PLANS}
    assert {v["metadata"]["aspect"] for v in doc["videos"]} == {"4:3", "16:9"}
    assert {v["metadata"]["encoding"] for v in doc["videos"]} == {"h264", "vp9", "mpeg4"}
    kinds = [q["id"].split(":")[0] for q in doc["queries"]]
    assert kinds.count("text") >= 10 and kinds.count("image") >= 10
    # a fade splits at the shot boundary: purple circle [3, 6) in the faded video
    purple = next(q for q in doc["queries"] if q.get("text") == "a purple circle")
    assert purple["relevant"] == [{"video_id": "fades-vp9-16x9", "start_s": 3.0, "end_s": 6.0}]
    red = next(q for q in doc["queries"] if q.get("text") == "a red circle" and "filters" not in q)
    assert len(red["relevant"]) == 3  # alone, and beside another shape in two videos
    # deterministic by seed: the same set again
    again = write_corpus(corpus.parent / "again", SEED)
    assert json.loads(again.read_text()) == doc
    for rel in [v["path"] for v in doc["videos"]] + [q["image"] for q in doc["queries"] if "image" in q]:
        assert (again.parent / rel).read_bytes() == (corpus.parent / rel).read_bytes(), rel


def test_eval_meets_the_floors_with_todays_defaults(unmerged: dict[str, Any]) -> None:
    agg = unmerged["aggregate"]["all"]
    assert agg["queries"] == len(unmerged["queries"]) == 21
    assert unmerged["options"]["merge_adjacent"] is False
    assert not _below_floors(agg, FLOORS["unmerged"]), agg
    for kind in ("text", "image"):
        assert unmerged["aggregate"][kind]["queries"] >= 10
    out = unmerged["_stdout"]
    assert "HIT@1" in out and "nDCG@10" in out and "shapes-demo corpus" in out
    with Image.open(unmerged["_png"]) as png:
        assert png.format == "PNG" and png.width > 600


def test_a_broken_ranking_fails_the_floors(unmerged: dict[str, Any]) -> None:
    # the moments the server returned, in reverse order: the same spans, ranked worst first
    reversed_metrics = []
    for q in unmerged["queries"]:
        ranked = [Span(m["video_id"], m["start_s"], m["end_s"], m["best_frame_s"]) for m in q["moments"]][::-1]
        relevant = [Span(r["video_id"], r["start_s"], r["end_s"]) for r in q["relevant"]]
        reversed_metrics.append(score_query(ranked, relevant, depth=10))
    broken = aggregate(reversed_metrics)
    failed = _below_floors(broken, FLOORS["unmerged"])
    assert {"hit@1", "map", "ndcg@10"} <= {f.split()[0] for f in failed}, broken


def test_merged_moments_fit_the_labels_better(
    server: LiveServer, corpus: Path, unmerged: dict[str, Any], tmp_path: Path
) -> None:
    result = run_cli("eval", str(corpus), "--merge", "--json", "-", target=server.target)
    assert result.returncode == 0, result.output
    merged = json.loads(result.stdout)
    agg = merged["aggregate"]["all"]
    assert merged["options"]["merge_adjacent"] is True
    assert not _below_floors(agg, FLOORS["merged"]), agg
    # a merged moment spans its shot: IoU with the label well above a 1 s frame window's
    assert agg["iou@1"] > unmerged["aggregate"]["all"]["iou@1"] + 0.2


def test_eval_errors_say_what_to_do(server: LiveServer, corpus: Path, tmp_path: Path) -> None:
    doc = json.loads(corpus.read_text())
    doc["videos"].append({"id": "never-ingested"})
    doc["queries"][0]["relevant"].append({"video_id": "never-ingested", "start_s": 0, "end_s": 1})
    missing = corpus.parent / "missing.json"
    missing.write_text(json.dumps(doc))
    result = run_cli("eval", str(missing), target=server.target)
    assert result.returncode == 2, result.output
    assert "'never-ingested'" in result.stderr and "--ingest" in result.stderr

    doc["queries"][1]["relevant"][0]["end_s"] = -1
    bad = corpus.parent / "bad.json"
    bad.write_text(json.dumps(doc))
    result = run_cli("eval", str(bad), target=server.target)
    assert result.returncode == 2, result.output
    assert "queries[1]" in result.stderr and "end_s" in result.stderr
