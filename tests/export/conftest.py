"""Fixtures of the export tests: a tiny random-weight OpenCLIP config exported once per session.

Every export and every torch reference runs in a subprocess, so the pytest process never imports torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, export_env

TORCH_REF = Path(__file__).with_name("torch_ref.py")

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_SEED = 7


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    seconds: float


def run_export(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> Run:
    t0 = time.monotonic()
    res = subprocess.run(
        [sys.executable, "-m", "moments_export", *args],
        cwd=REPO,
        env=env or export_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Run(res.returncode, res.stdout, res.stderr, time.monotonic() - t0)


def torch_ref(*args: str, timeout: float = 600) -> None:
    res = subprocess.run(
        [sys.executable, str(TORCH_REF), *args],
        cwd=REPO,
        env=export_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert res.returncode == 0, res.stderr[-3000:]


def ort_embed(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (y,) = sess.run(["embedding"], {name: x})
    return np.asarray(y)


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cfg") / "tiny-test.json"
    p.write_text(json.dumps(TINY_CFG))
    return p


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    models = tmp_path_factory.mktemp("models")
    r = run_export(
        "--model",
        "tiny-test",
        "--model-config",
        str(tiny_config),
        "--random-weights",
        "--seed",
        str(TINY_SEED),
        "--models-dir",
        str(models),
        "--fp16",
        "no",
    )
    assert r.returncode == 0, r.stderr[-4000:]
    out = Path(r.stdout.strip().splitlines()[-1])
    assert out == models / f"tiny-test__random-seed{TINY_SEED}"
    return out
