"""Check the exported graphs against torch on real inputs before an export may succeed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from moments_export.towers import torch_image_reference, torch_text_reference

FP32_MIN_COSINE = 0.9999
FP16_MIN_COSINE = 0.999
BATCHES = (1, 3, 17)

SENTENCES: tuple[str, ...] = (
    "a red circle",
    "a blue square on a grey background",
    "A man riding a horse on the beach at sunset.",
    "two dogs playing in the snow",
    "a crowded street in Tokyo at night, neon signs everywhere",
    "close-up of a cat's face",
    "the goalkeeper saves a penalty in the last minute!",
    "an empty kitchen with a wooden table",
    "a plane taking off from a runway",
    "children laughing at a birthday party with balloons",
    "a slide with the words 'quarterly results' and a bar chart",
    "rain on a window, city lights blurred behind it",
    "a person cooking pasta in a small apartment",
    "aerial view of a forest river",
    "café au lait & croissants",
    "東京タワーの夜景",
    "fireworks over the harbour 🎆",
    "",
)


def ort_session(path: Path, providers: list[str] | None = None) -> Any:
    """An onnxruntime session at the optimisation level the server uses for this graph (fp16 graphs at
    ORT_ENABLE_EXTENDED: see ``moments_server.inference.sessions.optimization_level``)."""
    import onnxruntime as ort

    from moments_server.inference.sessions import optimization_level

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.graph_optimization_level = optimization_level(path)
    return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])


def real_images(image_size: int, n: int = 17, seed: int = 0) -> np.ndarray:
    """Drawn pictures at the model's resolution: shapes on varied backgrounds, plain backgrounds,
    a smooth colour field and a checkerboard (not only random noise)."""
    import moments_shapes as shapes

    g = np.random.default_rng(seed)
    caps = shapes.all_captions()
    imgs = []
    for i in range(n):
        kind = i % 5
        if kind in (0, 1, 2):
            c, s, _ = caps[int(g.integers(0, len(caps)))]
            imgs.append(shapes.draw(c, s, image_size, g))
        elif kind == 3:
            imgs.append(shapes.draw_background(image_size, g))
        else:
            yy, xx = np.mgrid[0:image_size, 0:image_size]
            checker = (((yy // max(1, image_size // 8)) + (xx // max(1, image_size // 8))) % 2) * 200 + 20
            field = np.stack([xx * 255 // max(1, image_size - 1), yy * 255 // max(1, image_size - 1), checker], -1)
            imgs.append(field.astype(np.uint8))
    return np.stack(imgs)


def _cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.sum(a * b, axis=1)


def check_graph(
    path: Path,
    input_name: str,
    inputs: np.ndarray,
    reference: np.ndarray,
    dim: int,
    providers: list[str] | None = None,
) -> dict[str, Any]:
    """Run ``path`` on ``inputs`` in batches of 1, 3 and the rest; compare rows with ``reference``."""
    sess = ort_session(path, providers)
    outs = []
    i = 0
    batches = []
    for b in BATCHES:
        if i >= len(inputs):
            break
        chunk = inputs[i : i + b]
        (y,) = sess.run(["embedding"], {input_name: chunk})
        if y.dtype != np.float32 or y.shape != (len(chunk), dim):
            raise AssertionError(f"{path.name}: output {y.dtype} {y.shape}, expected float32 ({len(chunk)}, {dim})")
        outs.append(y)
        batches.append(len(chunk))
        i += b
    if i < len(inputs):
        (y,) = sess.run(["embedding"], {input_name: inputs[i:]})
        outs.append(y)
        batches.append(len(inputs) - i)
    got = np.concatenate(outs)
    # the whole set in one batch must agree with the pieces (dynamic batch, no cross-talk)
    (whole,) = sess.run(["embedding"], {input_name: inputs})
    cos = _cos_rows(got, reference)
    norms = np.linalg.norm(got, axis=1)
    return {
        "cosine_min": float(cos.min()),
        "cosine_mean": float(cos.mean()),
        "batch_consistency_cosine_min": float(_cos_rows(whole, got).min()),
        "norm_max_error": float(np.abs(norms - 1).max()),
        "batches": batches,
        "n": len(inputs),
    }


def references(loaded: Any, n_images: int = 17) -> dict[str, np.ndarray]:
    ids = loaded.tokenizer(list(SENTENCES)).numpy().astype(np.int64)
    pixels = real_images(loaded.image_size, n_images)
    return {
        "ids": ids,
        "text": torch_text_reference(loaded.model, torch.from_numpy(ids)).numpy(),
        "pixels": pixels,
        "image": torch_image_reference(loaded.model, torch.from_numpy(pixels), loaded.mean, loaded.std).numpy(),
    }


def verify_pair(
    text_path: Path,
    image_path: Path,
    refs: dict[str, np.ndarray],
    dim: int,
    min_cos: float,
    providers: list[str] | None = None,
) -> dict[str, Any]:
    t = check_graph(text_path, "input_ids", refs["ids"], refs["text"], dim, providers)
    if takes_trimmed_ids(text_path):
        # the same texts cut after the longest one's last token, and one position later: what a server sends
        from moments_server.inference.embedder import last_token_length

        cut = last_token_length(refs["ids"])
        for length in (cut, cut + 1):
            trimmed = check_graph(text_path, "input_ids", refs["ids"][:, :length], refs["text"], dim, providers)
            t[f"trimmed_{length}_cosine_min"] = trimmed["cosine_min"]
            t["cosine_min"] = min(t["cosine_min"], trimmed["cosine_min"])
    im = check_graph(image_path, "pixels", refs["pixels"], refs["image"], dim, providers)
    ok = (
        t["cosine_min"] >= min_cos
        and im["cosine_min"] >= min_cos
        and t["batch_consistency_cosine_min"] >= min_cos
        and im["batch_consistency_cosine_min"] >= min_cos
        and t["norm_max_error"] < 1e-3
        and im["norm_max_error"] < 1e-3
    )
    return {
        "ok": bool(ok),
        "threshold": min_cos,
        "text_cosine_min": t["cosine_min"],
        "image_cosine_min": im["cosine_min"],
        "text": t,
        "image": im,
        "inputs": {"sentences": len(refs["ids"]), "images": len(refs["pixels"])},
    }


def takes_trimmed_ids(path: Path) -> bool:
    """Whether a text graph's sequence axis is dynamic (onnx_export.export_text with trimming)."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return len(dims) == 2 and not dims[1].HasField("dim_value")


def embed(path: Path, input_name: str, x: np.ndarray, providers: list[str] | None = None) -> np.ndarray:
    (y,) = ort_session(path, providers).run(["embedding"], {input_name: x})
    return np.asarray(y)


def compare_graphs(
    fused: tuple[Path, Path], plain: tuple[Path, Path], refs: dict[str, np.ndarray], min_cos: float
) -> dict[str, Any]:
    """Fused (text, image) graphs against the unfused ones of the same precision, on the same real inputs."""
    t = _cos_rows(embed(fused[0], "input_ids", refs["ids"]), embed(plain[0], "input_ids", refs["ids"]))
    im = _cos_rows(embed(fused[1], "pixels", refs["pixels"]), embed(plain[1], "pixels", refs["pixels"]))
    return {
        "ok": bool(t.min() >= min_cos and im.min() >= min_cos),
        "threshold": min_cos,
        "text_cosine_min": float(t.min()),
        "image_cosine_min": float(im.min()),
    }


def time_session(path: Path, input_name: str, x: np.ndarray, providers: list[str], repeats: int = 20) -> float:
    """Median seconds per run of ``path`` on ``x`` (after warm-up)."""
    sess = ort_session(path, providers)
    for _ in range(3):
        sess.run(["embedding"], {input_name: x})
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sess.run(["embedding"], {input_name: x})
        times.append(time.perf_counter() - t0)
    return float(np.median(times))
