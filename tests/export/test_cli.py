"""Command-line behaviour: offline failure (exit 3), --checkpoint, usage errors (exit 2)."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import export_env
from tests.export.conftest import ort_embed, run_export, torch_ref


def _online() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def _offline_env(tmp_path: Path, hub_offline: bool) -> dict[str, str]:
    env = export_env()
    env["HF_HOME"] = str(tmp_path / "empty-hf-home")  # a cold cache
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    env["HOME"] = str(tmp_path / "home")  # open_clip's ~/.cache/clip
    if hub_offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    return env


@pytest.mark.parametrize("hub_offline", [True, False], ids=["HF_HUB_OFFLINE=1", "no-network"])
def test_offline_fails_fast_with_exit_3(tmp_path: Path, hub_offline: bool) -> None:
    if not hub_offline and _online():
        pytest.skip("this machine can reach huggingface.co; the no-network case needs it unreachable")
    r = run_export(
        "--model",
        "ViT-B-32",
        "--pretrained",
        "laion2b_s34b_b79k",
        "--models-dir",
        str(tmp_path / "models"),
        env=_offline_env(tmp_path, hub_offline),
        timeout=120,
    )
    assert r.returncode == 3, r.stderr
    msg = " ".join(r.stderr.split())
    assert "--checkpoint PATH" in msg
    assert "HF_HOME" in msg
    assert "offline" in msg.lower()
    assert r.seconds < 60
    assert r.stdout.strip() == ""
    assert not (tmp_path / "models" / "ViT-B-32__laion2b_s34b_b79k").exists()


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory, tiny_config: Path) -> Path:
    ckpt = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    torch_ref(
        "save-checkpoint",
        "--model",
        "tiny-test",
        "--model-config",
        str(tiny_config),
        "--seed",
        "123",
        "--out",
        str(ckpt),
    )
    return ckpt


def test_checkpoint_export(tmp_path: Path, tiny_config: Path, tiny_ckpt: Path) -> None:
    ckpt = tiny_ckpt
    r = run_export(
        "--model",
        "tiny-test",
        "--model-config",
        str(tiny_config),
        "--checkpoint",
        str(ckpt),
        "--models-dir",
        str(tmp_path / "models"),
        "--fp16",
        "no",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    import hashlib

    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    d = Path(r.stdout.strip().splitlines()[-1])
    assert d == tmp_path / "models" / f"tiny-test__ckpt-{sha[:12]}"
    m = json.loads((d / "manifest.json").read_text())
    assert m["checkpoint_sha256"] == sha and m["pretrained"] is None and m["random_weights"] is False
    assert m["descriptor_set"] == f"moments__tiny-test__ckpt-{sha[:12]}__{m['fingerprint'][:8]}"
    # the graphs carry the checkpoint's weights
    from tokenizers import Tokenizer

    import moments_shapes as shapes

    ids = np.array(
        [
            e.ids
            for e in Tokenizer.from_file(str(d / "tokenizer.json")).encode_batch(
                ["a red circle", "a blue square", "two dogs in the snow"]
            )
        ],
        dtype=np.int64,
    )
    px = np.stack([shapes.draw("green", "triangle", 32, i) for i in range(3)])
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "px.npy", px)
    torch_ref(
        "embed",
        "--model",
        "tiny-test",
        "--model-config",
        str(tiny_config),
        "--checkpoint",
        str(ckpt),
        "--ids",
        str(tmp_path / "ids.npy"),
        "--pixels",
        str(tmp_path / "px.npy"),
        "--out",
        str(tmp_path / "ref.npz"),
    )
    ref = np.load(tmp_path / "ref.npz")
    assert np.sum(ort_embed(d / "text.onnx", "input_ids", ids) * ref["text"], axis=1).min() >= 0.9999
    assert np.sum(ort_embed(d / "image.onnx", "pixels", px) * ref["image"], axis=1).min() >= 0.9999


USAGE_CASES = [
    ["--model", "no-such-model", "--pretrained", "x"],
    ["--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--checkpoint", "x.pt"],
    ["--model", "ViT-B-32", "--checkpoint", "/nonexistent/x.pt"],
    ["--model", "ViT-B-32", "--pretrained", "no-such-tag"],
    ["--model", "ViT-B-32"],
    ["--model", "shapes-demo", "--fp16", "sometimes"],
    ["--model", "shapes-demo", "--pretrained", "openai"],
    [],
]


def test_usage_errors_exit_2(tmp_path: Path, tiny_config: Path, tiny_ckpt: Path) -> None:
    """All cases in one interpreter (one torch import): each must return 2 and write nothing."""
    import subprocess
    import sys

    from tests.export.conftest import TINY_CFG

    wide = json.loads(json.dumps(TINY_CFG))
    wide["text_cfg"]["width"] = 48
    wide_cfg = tmp_path / "cfg" / "tiny-wide.json"
    wide_cfg.parent.mkdir()
    wide_cfg.write_text(json.dumps(wide))
    out = tmp_path / "models"
    # a checkpoint of another architecture is a usage error too
    cases = [[*a, "--models-dir", str(out)] for a in USAGE_CASES]
    cases.append(
        [
            "--model",
            "tiny-wide",
            "--model-config",
            str(wide_cfg),
            "--checkpoint",
            str(tiny_ckpt),
            "--models-dir",
            str(out),
        ]
    )
    code = f"import json, sys; from moments_export.cli import main; print(json.dumps([main(a) for a in {cases!r}]))"
    res = subprocess.run([sys.executable, "-c", code], env=export_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    codes = json.loads(res.stdout.strip().splitlines()[-1])
    assert codes == [2] * len(cases), list(zip(cases, codes, strict=True))
    assert "does not fit" in res.stderr
    assert not out.exists() or list(out.iterdir()) == []
