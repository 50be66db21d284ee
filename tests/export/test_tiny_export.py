"""Export of a tiny random-weight OpenCLIP config: graphs, parity with torch, dynamic batch, manifest."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import TINY_SEED, ort_embed, torch_ref


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _inputs(d: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    from tokenizers import Tokenizer

    import moments_shapes as shapes

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    texts = [f"{cap}, seen from far away" if i % 2 else cap for i, (_, _, cap) in enumerate(shapes.all_captions())]
    ids = np.array([e.ids for e in tok.encode_batch(texts[:n])], dtype=np.int64)
    g = np.random.default_rng(3)
    caps = shapes.all_captions()
    px = np.stack([shapes.draw(caps[i % len(caps)][0], caps[i % len(caps)][1], 32, g) for i in range(n)])
    return ids, px


def test_graph_io(tiny_dir: Path) -> None:
    import onnx

    for fname, inp, dtype in (
        ("text.onnx", "input_ids", onnx.TensorProto.INT64),
        ("image.onnx", "pixels", onnx.TensorProto.UINT8),
    ):
        m = onnx.load(str(tiny_dir / fname))
        assert [i.name for i in m.graph.input] == [inp]
        assert [o.name for o in m.graph.output] == ["embedding"]
        t = m.graph.input[0].type.tensor_type
        assert t.elem_type == dtype
        dims = [d.dim_param or d.dim_value for d in t.shape.dim]
        # the text graph takes ids cut after the batch's last token (towers.trim_blocker): any length to 77
        assert dims == (["batch", "sequence"] if inp == "input_ids" else ["batch", 32, 32, 3])
        out = m.graph.output[0].type.tensor_type
        assert out.elem_type == onnx.TensorProto.FLOAT
        assert [d.dim_param or d.dim_value for d in out.shape.dim] == ["batch", 32]
        assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) == 17


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_dynamic_batch_and_unit_norm(tiny_dir: Path, batch: int) -> None:
    ids, px = _inputs(tiny_dir, 17)
    t = ort_embed(tiny_dir / "text.onnx", "input_ids", ids[:batch])
    i = ort_embed(tiny_dir / "image.onnx", "pixels", px[:batch])
    assert t.shape == (batch, 32) and t.dtype == np.float32
    assert i.shape == (batch, 32) and i.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(i, axis=1), 1.0, atol=1e-5)
    # a row does not depend on what else is in the batch
    full_t = ort_embed(tiny_dir / "text.onnx", "input_ids", ids)
    full_i = ort_embed(tiny_dir / "image.onnx", "pixels", px)
    np.testing.assert_allclose(t, full_t[:batch], atol=1e-5)
    np.testing.assert_allclose(i, full_i[:batch], atol=1e-5)


def test_parity_with_torch(tiny_dir: Path, tiny_config: Path, tmp_path: Path) -> None:
    ids, px = _inputs(tiny_dir, 17)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "px.npy", px)
    torch_ref(
        "embed",
        "--model",
        "tiny-test",
        "--model-config",
        str(tiny_config),
        "--random-seed",
        str(TINY_SEED),
        "--ids",
        str(tmp_path / "ids.npy"),
        "--pixels",
        str(tmp_path / "px.npy"),
        "--out",
        str(tmp_path / "ref.npz"),
    )
    ref = np.load(tmp_path / "ref.npz")
    t = ort_embed(tiny_dir / "text.onnx", "input_ids", ids)
    i = ort_embed(tiny_dir / "image.onnx", "pixels", px)
    assert np.sum(t * ref["text"], axis=1).min() >= 0.9999
    assert np.sum(i * ref["image"], axis=1).min() >= 0.9999
    # cut after the longest text's last token (or a little later), the ids give torch's full-length embeddings
    used = int(np.flatnonzero(ids.any(axis=0))[-1]) + 1
    assert used < 20 and not ids[:, used:].any()
    for length in (used, used + 5):
        cut = ort_embed(tiny_dir / "text.onnx", "input_ids", ids[:, :length])
        assert np.sum(cut * ref["text"], axis=1).min() >= 0.99999
    # and the embeddings are not degenerate (different inputs, different vectors)
    assert np.sum(i[0] * i[1]) < 0.9999


def test_manifest(tiny_dir: Path) -> None:
    from moments_export.manifest import check_model_dir, descriptor_set_name, manifest_fingerprint

    m = json.loads((tiny_dir / "manifest.json").read_text())
    assert check_model_dir(tiny_dir) == m
    assert m["format"] == 1
    assert m["model"] == "tiny-test" and m["pretrained"] is None and m["checkpoint_sha256"] is None
    assert m["random_weights"] is True
    assert (m["embed_dim"], m["image_size"], m["context_length"], m["opset"]) == (32, 32, 77, 17)
    assert len(m["mean"]) == 3 and len(m["std"]) == 3
    assert m["inputs"] == {"text": "input_ids", "image": "pixels"} and m["output"] == "embedding"
    assert m["precision"] == {"cpu": "fp32", "gpu": "fp32"}
    assert m["text_trim"] is True and m["input_layout"]["text"] == "int64 [batch, sequence <= context_length]"
    files = m["files"]
    assert set(files) == {"text", "image", "tokenizer"}
    assert set(files["text"]) == {"fp32", "fp32_fused"} and set(files["image"]) == {"fp32", "fp32_fused"}
    for e in (*files["text"].values(), *files["image"].values(), files["tokenizer"]):
        assert _sha(tiny_dir / e["path"]) == e["sha256"]
    assert sorted(p.name for p in tiny_dir.iterdir()) == [
        "image.fused.onnx", "image.onnx", "manifest.json", "text.fused.onnx", "text.onnx", "tokenizer.json",
    ]  # fmt: skip
    assert re.fullmatch(r"[0-9a-f]{64}", m["fingerprint"])
    assert m["descriptor_set"] == f"moments__tiny-test__{m['fingerprint'][:8]}"
    assert m["descriptor_set"] == descriptor_set_name("tiny-test", None, None, m["fingerprint"])
    assert m["fingerprint"] == manifest_fingerprint(m)
    v = m["verification"]
    assert v["text_cosine_min"] >= 0.9999 and v["image_cosine_min"] >= 0.9999
    trimmed = [k for k in v["fp32"]["text"] if k.startswith("trimmed_")]
    assert len(trimmed) == 2 and all(v["fp32"]["text"][k] >= 0.9999 for k in trimmed)
    assert v["fp16"] is None
    for key in ("fp32",):
        f = v["fused"][key]
        assert f["ok"] and f["text_cosine_min"] >= 0.9999 and f["image_cosine_min"] >= 0.9999
        assert f["vs_unfused"]["ok"] and f["vs_unfused"]["text_cosine_min"] >= 0.9999
        for tower in ("text", "image"):  # 2 layers: every attention and MLP fused
            ops = f["fused_operators"][tower]
            assert ops["Attention"] == 2 and ops["BiasGelu"] == 2 and ops["SkipLayerNormalization"] == 4
    assert m["tokenizer"]["parity_checked"] >= 500
    assert {k["id"] for k in m["tokenizer"]["known_differences"]} >= {"ftfy-mojibake", "greek-final-sigma"}
    assert set(m["exporter"]) >= {"torch", "open_clip", "onnx"}


def test_tampered_file_is_detected(tiny_dir: Path, tmp_path: Path) -> None:
    import shutil

    from moments_export.manifest import check_model_dir

    d = tmp_path / "copy"
    shutil.copytree(tiny_dir, d)
    with open(d / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ValueError, match="sha256"):
        check_model_dir(d)


def test_descriptor_sets_differ_between_models() -> None:
    from moments_export.manifest import descriptor_set_name

    fp = "ab" * 32
    names = {
        descriptor_set_name("ViT-B-32", "laion2b_s34b_b79k", None, fp),
        descriptor_set_name("ViT-B-32", "openai", None, fp),
        descriptor_set_name("ViT-B-32", None, "cd" * 32, fp),
        descriptor_set_name("ViT-B-16", "laion2b_s34b_b79k", None, fp),
        descriptor_set_name("ViT-B-32", "laion2b_s34b_b79k", None, "ef" * 32),
    }
    assert len(names) == 5
    assert (
        descriptor_set_name("ViT-B-32", "laion2b_s34b_b79k", None, fp)
        == "moments__vit-b-32__laion2b_s34b_b79k__abababab"
    )


def test_fused_graph_has_one_attention_node_per_layer(tiny_dir: Path) -> None:
    import onnx

    for name, causal in (("text", 1), ("image", 0)):
        g = onnx.load(str(tiny_dir / f"{name}.fused.onnx")).graph
        attn = [n for n in g.node if n.op_type == "Attention"]
        assert len(attn) == 2 and all(n.domain == "com.microsoft" for n in attn)
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in attn[0].attribute}
        assert attrs["unidirectional"] == causal and attrs["num_heads"] == 2
        assert not [n for n in g.node if n.op_type == "Softmax"]  # no unfused attention left


def test_fp16_variant_on_cpu(tmp_path: Path, tiny_config: Path, tiny_dir: Path) -> None:
    """``--fp16 yes`` without a GPU: fp16 graphs (plain and fused) exported from the half-precision model, same
    I/O, verified on the CPU, but not recommended."""
    import onnx

    from tests.export.conftest import run_export

    r = run_export(
        "--model", "tiny-test", "--model-config", str(tiny_config), "--random-weights", "--seed", str(TINY_SEED),
        "--out", str(tmp_path / "m"), "--fp16", "yes",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-4000:]
    d = tmp_path / "m"
    m = json.loads((d / "manifest.json").read_text())
    keys = {"fp32", "fp16", "fp32_fused", "fp16_fused"}
    assert set(m["files"]["text"]) == keys and set(m["files"]["image"]) == keys
    assert m["files"]["text"]["fp16"]["path"] == "text.fp16.onnx"
    assert m["files"]["image"]["fp16_fused"]["path"] == "image.fp16.fused.onnx"
    assert m["precision"] == {"cpu": "fp32", "gpu": "fp32"}
    assert (
        m["text_trim"] is True and m["input_layout"]["text"] == "int64 [batch, sequence <= context_length]"
    )  # not measured on a GPU: not recommended
    v16 = m["verification"]["fp16"]
    assert v16["ok"] and v16["text_cosine_min"] >= 0.999 and v16["image_cosine_min"] >= 0.999
    assert v16["device"] == "cpu"
    f16 = m["verification"]["fused"]["fp16"]
    assert f16["ok"] and f16["vs_unfused"]["ok"] and f16["vs_unfused"]["image_cosine_min"] >= 0.999
    # same fp32 graphs (and identity) as without --fp16: the fingerprint does not change
    assert m["fingerprint"] == json.loads((tiny_dir / "manifest.json").read_text())["fingerprint"]
    ids, px = _inputs(d, 5)
    for name, inp, x in (("text", "input_ids", ids), ("image", "pixels", px)):
        g = onnx.load(str(d / f"{name}.fp16.onnx")).graph
        # weights are half precision (exported from a half model, not converted), I/O types are kept
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in g.initializer)
        assert g.input[0].type.tensor_type.elem_type == (
            onnx.TensorProto.INT64 if name == "text" else onnx.TensorProto.UINT8
        )
        assert g.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        y32 = ort_embed(d / f"{name}.onnx", inp, x)
        for graph in (f"{name}.fp16.onnx", f"{name}.fp16.fused.onnx"):
            y16 = _embed_like_server(d / graph, inp, x)
            assert y16.dtype == np.float32
            assert np.sum(y16 * y32, axis=1).min() >= 0.999, graph


def _embed_like_server(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    from moments_server.inference.sessions import optimization_level

    so = ort.SessionOptions()
    so.graph_optimization_level = optimization_level(path)
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    (y,) = s.run(["embedding"], {name: x})
    return np.asarray(y)


def test_only_causal_argmax_text_towers_are_trimmed() -> None:
    """The cut is exact only when no position reads the padding: a causal mask and end-of-text pooling."""
    import copy

    from open_clip.model import CLIP

    from moments_export.towers import trim_blocker
    from tests.export.conftest import TINY_CFG

    def tiny(**text: object) -> CLIP:
        return CLIP(TINY_CFG["embed_dim"], TINY_CFG["vision_cfg"], {**TINY_CFG["text_cfg"], **text})

    assert trim_blocker(tiny()) is None
    assert "pooling 'last'" in (trim_blocker(tiny(pool_type="last")) or "")
    assert "no causal attention mask" in (trim_blocker(tiny(no_causal_mask=True)) or "")
    bidirectional = tiny()
    bidirectional.attn_mask = copy.deepcopy(bidirectional.attn_mask).zero_()
    assert "not causal" in (trim_blocker(bidirectional) or "")
    assert "not open_clip's CLIP text tower" in (trim_blocker(bidirectional.visual) or "")
