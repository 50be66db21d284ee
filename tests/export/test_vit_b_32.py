"""The ViT-B-32 architecture at full size, exported offline from a warm Hugging Face cache.

The cache holds random weights saved where open_clip's ``laion2b_s34b_b79k`` tag looks for its file, so
this also proves that ``--pretrained`` works offline once the weights are cached (HF_HOME).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import export_env
from tests.export.conftest import ort_embed, run_export, torch_ref

REPO_ID = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.mark.slow
def test_vit_b_32_from_warm_cache(tmp_path: Path) -> None:
    hf_home = tmp_path / "hf"
    repo = hf_home / "hub" / f"models--{REPO_ID.replace('/', '--')}"
    rev = "0123456789abcdef0123456789abcdef01234567"
    weights = repo / "snapshots" / rev / "open_clip_pytorch_model.bin"
    weights.parent.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    torch_ref("save-checkpoint", "--model", "ViT-B-32", "--seed", "1", "--out", str(weights))

    env = export_env()
    env["HF_HOME"] = str(hf_home)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("HF_HUB_CACHE", None)
    t0 = time.monotonic()
    r = run_export(
        "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k", "--models-dir", str(tmp_path / "models"),
        "--fp16", "no", env=env,
    )  # fmt: skip
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-4000:]
    d = Path(r.stdout.strip().splitlines()[-1])
    assert d == tmp_path / "models" / "ViT-B-32__laion2b_s34b_b79k"
    m = json.loads((d / "manifest.json").read_text())
    v = m["verification"]
    print(f"ViT-B-32 export {took:.1f}s; cosine min text {v['text_cosine_min']:.7f} image {v['image_cosine_min']:.7f}")
    assert (m["model"], m["pretrained"], m["checkpoint_sha256"]) == ("ViT-B-32", "laion2b_s34b_b79k", None)
    assert (m["embed_dim"], m["image_size"], m["context_length"]) == (512, 224, 77)
    assert m["descriptor_set"] == f"moments__vit-b-32__laion2b_s34b_b79k__{m['fingerprint'][:8]}"
    assert v["text_cosine_min"] >= 0.9999 and v["image_cosine_min"] >= 0.9999
    assert v["fp32"]["image"]["batches"] == [1, 3, 13] and v["fp32"]["image"]["n"] == 17
    # fused graphs at full size: every layer's attention in one Attention node, agreeing with the plain graphs
    f = v["fused"]["fp32"]
    assert f["ok"] and f["vs_unfused"]["text_cosine_min"] >= 0.9999 and f["vs_unfused"]["image_cosine_min"] >= 0.9999
    for tower in ("text", "image"):
        ops = f["fused_operators"][tower]
        assert (ops["Attention"], ops["BiasGelu"], ops["SkipLayerNormalization"]) == (12, 12, 24)

    from tokenizers import Tokenizer

    import moments_shapes as shapes

    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = np.array(
        [e.ids for e in tok.encode_batch(["a photo of a dog", "a red circle", "the city at night"])], dtype=np.int64
    )
    px = np.stack([shapes.draw("orange", "cross", 224, i) for i in range(3)])
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "px.npy", px)
    torch_ref(
        "embed", "--model", "ViT-B-32", "--checkpoint", str(weights), "--ids", str(tmp_path / "ids.npy"),
        "--pixels", str(tmp_path / "px.npy"), "--out", str(tmp_path / "ref.npz"),
    )  # fmt: skip
    ref = np.load(tmp_path / "ref.npz")
    assert np.sum(ort_embed(d / "text.onnx", "input_ids", ids) * ref["text"], axis=1).min() >= 0.9999
    assert np.sum(ort_embed(d / "image.onnx", "pixels", px) * ref["image"], axis=1).min() >= 0.9999
