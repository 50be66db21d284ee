"""Which graph the server loads for its provider and precision (fused when present), on real ONNX sessions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from moments_server.inference.manifest import ModelDirError, load_manifest
from moments_server.inference.sessions import load_towers, optimization_level


def _copy_without(src: Path, dst: Path, keys: set[str]) -> Path:
    shutil.copytree(src, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for tower in ("text", "image"):
        for key in keys:
            entry = m["files"][tower].pop(key, None)
            if entry:
                (dst / entry["path"]).unlink()
    (dst / "manifest.json").write_text(json.dumps(m))
    return dst


def test_fused_graphs_load_when_asked_and_agree_with_the_plain_ones(shapes_model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(shapes_model_dir)
    assert manifest.tower_path("text", "fp32_fused") is not None, "the export writes fused graphs by default"
    auto = load_towers(manifest, "cpu", threads=1)
    assert (auto[0].fused, auto[1].fused) == (False, False)  # the CPU serves the plain graphs unless asked
    text, image = load_towers(manifest, "cpu", threads=1, fused_graphs="yes")
    assert (text.fused, image.fused) == (True, True)
    assert (text.precision, image.precision, text.provider) == ("fp32", "fp32", "CPUExecutionProvider")
    ops = {n.op_type for n in onnx.load(str(manifest.tower_path("text", "fp32_fused"))).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops

    plain_dir = _copy_without(shapes_model_dir, tmp_path / "plain", {"fp32_fused", "fp16_fused"})
    p_text, p_image = load_towers(load_manifest(plain_dir), "cpu", threads=1)
    assert (p_text.fused, p_image.fused) == (False, False)

    rng = np.random.default_rng(0)
    ids = np.zeros((5, manifest.context_length), dtype=np.int64)
    ids[:, 0], ids[:, 1:6], ids[:, 6] = 49406, rng.integers(300, 40000, (5, 5)), 49407
    px = rng.integers(0, 256, (5, manifest.image_size, manifest.image_size, 3), dtype=np.uint8)
    for fused, plain, x in ((text, p_text, ids), (image, p_image, px)):
        a, b = fused.run(x), plain.run(x)
        assert np.sum(a * b, axis=1).min() >= 0.9999


def test_serving_graph_falls_back(shapes_model_dir: Path, tmp_path: Path) -> None:
    manifest = load_manifest(shapes_model_dir)
    # no fp16 graphs in this export: a GPU asking for fp16 gets fp32 (fused)
    path, precision, fused = manifest.serving_graph("image", "fp16")
    assert (path.name, precision, fused) == ("image.fused.onnx", "fp32", True)
    bare = load_manifest(_copy_without(shapes_model_dir, tmp_path / "bare", {"fp32_fused"}))
    path, precision, fused = bare.serving_graph("text", "fp16")
    assert (path.name, precision, fused) == ("text.onnx", "fp32", False)
    m = json.loads((tmp_path / "bare" / "manifest.json").read_text())
    m["files"]["text"] = {}
    (tmp_path / "bare" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ModelDirError, match="no text graph"):
        load_manifest(tmp_path / "bare").serving_graph("text", "fp32")


def test_fp16_graphs_skip_the_layout_pass_that_crashes_on_them() -> None:
    assert optimization_level(Path("m/text.fp16.fused.onnx")) == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert optimization_level(Path("m/image.fp16.onnx")) == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert optimization_level(Path("m/image.fused.onnx")) == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
