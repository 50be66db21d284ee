"""Shared fixtures. ``shapes_model_dir``: the shapes-demo model, trained and exported once per run."""

from __future__ import annotations

import ast
import fcntl
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHAPES_SEED = 0


def export_env() -> dict[str, str]:
    """Environment for ``python -m moments_export`` subprocesses (torch stays out of the test process)."""
    env = dict(os.environ)
    # server too: the export verifies graphs at the optimisation level the server's sessions use
    paths = [str(REPO / "export"), str(REPO / "server"), str(REPO / "clients" / "python")]
    env["PYTHONPATH"] = os.pathsep.join(paths + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


def _sources_hash() -> str:
    # the files that decide the exported bytes (not the CLI's wording or the checks around it)
    h = hashlib.sha256(f"seed={SHAPES_SEED}".encode())
    pkg = REPO / "export" / "moments_export"
    files = [pkg / f"{n}.py" for n in ("shapes_demo", "towers", "onnx_export", "fused", "variants", "manifest")]
    files += sorted((pkg / "tokenizer").glob("*.py"))
    files.append(REPO / "clients" / "python" / "moments_shapes" / "__init__.py")  # the drawings it trains on
    files += [pkg / "load.py", REPO / "server" / "moments_server" / "framing.py"]
    for f in files:  # the syntax tree, so reformatting or comments do not force a retrain
        h.update(f.name.encode() + b"\0" + ast.dump(ast.parse(f.read_text(encoding="utf-8"))).encode())
    return h.hexdigest()[:16]


@pytest.fixture(scope="session")
def shapes_model_dir() -> Path:
    try:
        return ensure_shapes_model()
    except RuntimeError as e:
        pytest.fail(str(e))


def ensure_shapes_model() -> Path:
    """Path of a verified shapes-demo model directory (``.cache/test-models/shapes-demo-<hash>``).

    Reused across runs while the export sources and seed are unchanged and its manifest verifies;
    otherwise trained and exported here (about a minute or two on 2 CPU cores).
    """
    sys.path.insert(0, str(REPO / "export"))
    try:
        from moments_export.manifest import check_model_dir
    finally:
        sys.path.remove(str(REPO / "export"))
    cache = REPO / ".cache" / "test-models"
    cache.mkdir(parents=True, exist_ok=True)
    out = cache / f"shapes-demo-{_sources_hash()}"
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            check_model_dir(out)
            return out
        except (ValueError, OSError, KeyError):
            pass
        cmd = [
            sys.executable,
            "-m",
            "moments_export",
            "--model",
            "shapes-demo",
            "--seed",
            str(SHAPES_SEED),
            "--fp16",
            "no",
            "--out",
            str(out),
        ]
        res = subprocess.run(cmd, cwd=REPO, env=export_env(), capture_output=True, text=True, timeout=900)
        if res.returncode != 0:
            raise RuntimeError(f"shapes-demo export failed ({res.returncode}):\n{res.stderr[-4000:]}")
        assert res.stdout.strip().splitlines()[-1] == str(out)
        check_model_dir(out)
        return out
