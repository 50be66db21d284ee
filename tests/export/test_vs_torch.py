"""tests/bench/vs_torch.py (issue 11's towers vs torch eager, same process) rehearsed on the CPU with the tiny
random-weight export, so that the command a lent card runs cannot rot. It runs in a subprocess (torch stays out
of the test process). No speed assertions: both sides computed the same embeddings and every figure measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO, export_env


def _run(model: Path, config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tests.bench.vs_torch", "--model-dir", str(model), "--model-config", str(config)]
    cmd += ["--device", "cpu", "--image-batches", "4,8", "--text-batches", "8", "--callers", "1,4"]
    cmd += ["--seconds", "0.4", "--out", str(out)]
    env = export_env()
    env["PYTHONPATH"] = f"{REPO}:{env['PYTHONPATH']}"
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_towers_vs_torch_rehearsal(tiny_dir: Path, tiny_config: Path, tmp_path: Path) -> None:
    run = _run(tiny_dir, tiny_config, tmp_path / "vs.json")
    assert run.returncode == 0, run.stderr[-4000:]
    res = json.loads((tmp_path / "vs.json").read_text())
    # torch rebuilt the exported model from the manifest's seed: the same embeddings on both sides
    assert res["agreement"]["image_min_cosine"] >= 0.9999 and res["agreement"]["text_min_cosine"] >= 0.9999
    assert res["onnx"]["provider"] == "CPUExecutionProvider" and res["torch"]["dtype"] == "float32"
    assert [(r["tower"], r["batch"]) for r in res["towers"]] == [("image", 4), ("image", 8), ("text", 8)]
    for r in res["towers"]:
        assert r["onnx_per_s"] > 0 and r["torch_per_s"] > 0
        assert r["ratio"] == round(r["onnx_per_s"] / r["torch_per_s"], 3)
    # the server cuts short queries' ids (the tiny config's text tower is open_clip's causal one)
    assert res["text_length"] < 77
    levels = res["embedder"]["levels"]
    assert [lv["callers"] for lv in levels] == [1, 4] and all(lv["qps"] > 0 and lv["p50_ms"] > 0 for lv in levels)
    assert abs(res["one_caller_p50_minus_b1_ms"] - (levels[0]["p50_ms"] - res["text_b1_p50_ms"])) <= 2e-3


def test_a_model_torch_cannot_rebuild_is_refused(tiny_dir: Path, tiny_config: Path, tmp_path: Path) -> None:
    # a copy whose manifest does not say random weights (a trained or downloaded model): torch cannot rebuild it
    model = tmp_path / "model"
    model.mkdir()
    for f in tiny_dir.iterdir():
        (model / f.name).symlink_to(f)
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    manifest["training"] = {"identity": {"random_weights": False}}
    (model / "manifest.json").unlink()
    (model / "manifest.json").write_text(json.dumps(manifest))
    run = _run(model, tiny_config, tmp_path / "vs.json")
    assert run.returncode != 0 and "not exported with --random-weights" in run.stderr
