"""The whole-server GPU check rehearsed on the CPU at small sizes (shapes-demo, 1k frames, a few seconds), so
that the one prepared command a lent card runs cannot rot. No speed assertions: the result files exist,
have the expected keys, and every figure measured something."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bench.multiload import server_help, workers_flags
from tests.bench.server_check import split_clients
from tests.conftest import REPO


def test_clients_split_over_processes() -> None:
    assert split_clients(512, 4) == (4, 128)
    assert split_clients(64, 8) == (8, 8)
    assert split_clients(6, 4) == (3, 2)
    assert split_clients(1, 4) == (1, 1)
    assert split_clients(7, 4) == (1, 7)


def test_workers_flag_only_when_asked_and_offered() -> None:
    assert workers_flags(None) == ([], "server default")
    if "--workers" in server_help():
        assert workers_flags(3) == (["--workers", "3"], "--workers 3")
    else:
        assert workers_flags(1) == ([], "1 process (the server has no --workers flag)")
        with pytest.raises(RuntimeError, match="no --workers flag"):
            workers_flags(3)


def test_server_check_rehearsal(tmp_path: Path, shapes_model_dir: Path) -> None:
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tests.bench.server_check", "--out", str(out), "--device", "cpu", "--small"]
    cmd += ["--model-dir", str(shapes_model_dir), "--work", str(tmp_path / "work"), "--budget-s", "50"]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=170)
    assert run.returncode == 0, run.stderr[-4000:]
    [j] = out.glob("server-check-*-small.json")
    [md] = out.glob("server-check-*-small.md")
    doc = json.loads(j.read_text())
    assert set(doc) == {"meta", "phases", "figures", "errors"} and doc["errors"] == []
    meta = doc["meta"]
    assert meta["device"] and meta["model"]["name"] == "shapes-demo" and meta["store"]["spec"]["n"] == 1000
    assert meta["embedder_alone"]["provider"] == "CPUExecutionProvider"
    assert meta["server_info"]["model"]["provider"] == "CPUExecutionProvider"
    assert not any("skipped" in p or "error" in p for p in doc["phases"].values()), doc["phases"]
    figs = {f["id"]: f for f in doc["figures"]}
    assert set(figs) == {"search.c1", "search.c8", "ingest", "ingest+search"}
    for fid in ("search.c1", "search.c8"):
        f = figs[fid]
        assert f["value"] > 0 and f["unit"] == "QPS", f
        assert 0 < f["details"]["p50_ms"] <= f["details"]["p99_ms"]
        assert f["details"]["result"]["errors"] == {}
    top = figs["search.c8"]
    assert top["baseline_value"] > 0 and top["ratio"] > 0  # the Embedder alone, same run
    assert top["details"]["clients"]["client_processes"] >= 1
    ing = figs["ingest"]
    assert ing["value"] > 0 and ing["baseline_value"] > 0 and ing["details"]["frames"] > 0
    assert ing["details"]["bare_decode"]["processes"] >= 1
    both = figs["ingest+search"]
    assert both["value"] > 0 and both["details"]["search_during_ingest"]["completed"] > 0
    text = md.read_text()
    assert meta["device"] in text and "| search.c8 |" in text and "| ingest |" in text
