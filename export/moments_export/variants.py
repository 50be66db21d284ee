"""The serving variants beside the plain fp32 graphs: fused fp32, fp16 and fused fp16, each verified before
the manifest may list it.

- every variant against torch fp32 on real inputs (>= 0.9999 fp32, >= 0.999 fp16), on the CPU too;
- fused graphs also against the unfused graphs of their precision (>= 0.9999 fp32, >= 0.999 fp16);
- fp16 is recommended for GPUs only when it measured faster than fp32 there.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from moments_export import VerificationFailed, onnx_export, verify
from moments_export import fp16 as fp16_mod
from moments_export import fused as fz
from moments_export import manifest as mf

Step = Callable[[str], AbstractContextManager[Any]]


def _paths(work: Path, key: str) -> tuple[Path, Path]:
    return work / mf.graph_file("text", key), work / mf.graph_file("image", key)


def _verified(
    key: str, work: Path, refs: dict[str, Any], dim: int, min_cos: float, providers: list[str]
) -> dict[str, Any]:
    text, image = _paths(work, key)
    v = verify.verify_pair(text, image, refs, dim, min_cos, providers)
    if not v["ok"]:
        raise VerificationFailed(
            f"{key} graphs disagree with torch: text cosine min {v['text_cosine_min']:.5f}, "
            f"image {v['image_cosine_min']:.5f} (need >= {min_cos})"
        )
    if providers[0] != "CPUExecutionProvider":  # verified on the GPU above; on the CPU as well
        v["cpu"] = verify.verify_pair(text, image, refs, dim, min_cos, ["CPUExecutionProvider"])
        if not v["cpu"]["ok"]:
            raise VerificationFailed(
                f"{key} graphs disagree with torch on the CPU provider: text cosine min "
                f"{v['cpu']['text_cosine_min']:.5f}, image {v['cpu']['image_cosine_min']:.5f} (need >= {min_cos})"
            )
    if key.endswith("_fused"):
        plain = key.removesuffix("_fused")
        v["vs_unfused"] = verify.compare_graphs(_paths(work, key), _paths(work, plain), refs, min_cos)
        if not v["vs_unfused"]["ok"]:
            raise VerificationFailed(f"{key} graphs disagree with the unfused {plain} graphs: {v['vs_unfused']}")
    return v


def export_variants(
    model: Any, loaded: Any, work: Path, refs: dict[str, Any], want16: bool, want_fused: bool, step: Step
) -> dict[str, Any]:
    """Write and verify the variants in ``work``. Returns ``keys`` (the file keys written besides fp32),
    ``fp16`` (its verification, or None), ``fused`` (per precision, or why none) and ``gpu_precision``."""
    gpu = fp16_mod.gpu_available()
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu else ["CPUExecutionProvider"]
    dim = loaded.embed_dim
    keys: list[str] = []
    fused: dict[str, Any] = {}
    out: dict[str, Any] = {"keys": keys, "fp16": None, "fused": fused if want_fused else None}

    def fused_variant(clip: Any, key: str, min_cos: float) -> None:
        if "skipped" in fused:
            return
        with step(f"fused {key} graphs"):
            try:
                ops = onnx_export.export_variant(clip, loaded, *_paths(work, f"{key}_fused"), fused=True)
            except fz.NotFusable as e:
                fused["skipped"] = f"attention not fusable: {e}"
                return
            fused[key] = _verified(f"{key}_fused", work, refs, dim, min_cos, providers)
            fused[key]["fused_operators"] = ops
            keys.append(f"{key}_fused")

    if want_fused:
        fused_variant(model, "fp32", verify.FP32_MIN_COSINE)
    if want16:
        half = onnx_export.half_model(model)
        with step("fp16 graphs (exported from the half-precision model)"):
            onnx_export.export_variant(half, loaded, *_paths(work, "fp16"), fused=False)
            v16 = _verified("fp16", work, refs, dim, verify.FP16_MIN_COSINE, providers)
            v16["device"] = "cuda" if gpu else "cpu"
            keys.append("fp16")
            out["fp16"] = v16
        if want_fused:
            fused_variant(half, "fp16", verify.FP16_MIN_COSINE)
        del half
        gc.collect()
        out["gpu_precision"] = "fp32"
        v16["gpu_speed"] = None
        if gpu:
            v16["gpu_speed"] = _gpu_speed(work, refs, keys, providers)
            if v16["gpu_speed"]["image"]["speedup"] > 1.05 and v16["gpu_speed"]["text"]["speedup"] > 1.0:
                out["gpu_precision"] = "fp16"
    out.setdefault("gpu_precision", "fp32")
    return out


def _gpu_speed(work: Path, refs: dict[str, Any], keys: list[str], providers: list[str]) -> dict[str, Any]:
    """fp16 against fp32 on the GPU, each in the graph the server would load (fused when written)."""
    import numpy as np

    k32 = "fp32_fused" if "fp32_fused" in keys else "fp32"
    k16 = "fp16_fused" if "fp16_fused" in keys else "fp16"
    big = np.repeat(refs["pixels"], 4, axis=0)[:64]
    ids = np.repeat(refs["ids"], 4, axis=0)[:64]
    res: dict[str, Any] = {"graphs": [k32, k16]}
    for tower, name, x in (("image", "pixels", big), ("text", "input_ids", ids)):
        res[tower] = fp16_mod.compare_speed(
            work / mf.graph_file(tower, k32), work / mf.graph_file(tower, k16), name, x, providers
        )
    return res
