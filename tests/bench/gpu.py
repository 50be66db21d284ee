"""Figure 7: GPU. With a usable CUDA device (onnxruntime's CUDA provider and a driver that answers): the
towers with the CUDA provider (fp16 files where the manifest recommends them) — bare image frames/s and
text/s by batch size, then the server (`--device cuda`) ingest frames/s and text QPS at 128 clients.
Goals on an H100: ≥ 5,000 frames/s ingest and ≥ 10,000 text QPS through the server.
Without CUDA the figure is skipped and the reason recorded."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tests.bench.common import Figure, Goal, log, skipped

BATCHES = (32, 64, 128, 256, 512)


def _reason_unavailable() -> str | None:
    import onnxruntime as ort

    from moments_server.inference.sessions import cuda_usable

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (
            f"no CUDA here: onnxruntime {ort.__version__} offers {ort.get_available_providers()} "
            "(onnxruntime-gpu and an NVIDIA driver are needed)"
        )
    if not cuda_usable():
        return "onnxruntime has the CUDA provider but no CUDA device answers (cuInit/cuDeviceGetCount)"
    return None


def run(ctx: Any) -> list[Figure]:
    why = _reason_unavailable()
    if why:
        img = skipped("7.image", "GPU image frames/s (CUDA provider, fp16)", why)
        img.goal = Goal("≥ 5,000 frames/s (H100)", ">=", 5000.0)
        txt = skipped("7.text", "GPU text QPS through the server (CUDA provider, fp16)", why)
        txt.goal = Goal("≥ 10,000 QPS (H100)", ">=", 10000.0)
        return [img, txt]
    from moments_server.inference.sessions import load_towers
    from tests.bench.load import query_texts, run_async, search_load, start_server, stop_server

    m = ctx.manifest()
    text, image = load_towers(m, "cuda", 1)
    rng = np.random.default_rng(0)
    img: dict[int, float] = {}
    for b in BATCHES:
        x = rng.integers(0, 255, (b, m.image_size, m.image_size, 3), dtype=np.uint8)
        image.run(x)
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < 2.0:
            image.run(x)
            n += b
        img[b] = round(n / (time.perf_counter() - t), 1)
        log(f"  GPU image batch {b}: {img[b]} frames/s")
    from moments_server.inference.tokenizer import TextTokenizer

    tok = TextTokenizer(m.tokenizer_path, m.context_length)
    txt: dict[int, float] = {}
    gen = query_texts("gpu ")
    for b in BATCHES:
        ids = tok([next(gen) for _ in range(b)])
        text.run(ids)
        t, n = time.perf_counter(), 0
        while time.perf_counter() - t < 2.0:
            text.run(ids)
            n += b
        txt[b] = round(n / (time.perf_counter() - t), 1)
    del text, image
    store_dir, _ = ctx.store(ctx.sizes["server_store"])
    server, _ = start_server(
        ctx.model(),
        f"embedded:{store_dir}",
        ctx.work / "gpu",
        "--device",
        "cuda",
        "--text-max-batch",
        "256",
        "--image-max-batch",
        "256",
        "--max-delay-ms",
        "2",
    )
    try:
        res = run_async(lambda: search_load(server.target, 128, duration_s=10.0, texts=query_texts("gq "), channels=16))
    finally:
        stop_server(server)
    best_img = max(img.values())
    return [
        Figure(
            "7.image",
            "GPU bare image tower best (CUDA, manifest precision)",
            best_img,
            "frames/s",
            goal=Goal("≥ 5,000 frames/s", ">=", 5000.0),
            details={"frames_per_s_by_batch": img},
            reason="bare tower; end-to-end ingest on GPU is bounded by decode on the host CPUs",
        ),
        Figure(
            "7.text",
            "GPU text QPS through the server, 128 clients",
            round(res.qps, 1),
            "QPS",
            baseline="bare text tower best",
            baseline_value=max(txt.values()),
            goal=Goal("≥ 10,000 QPS", ">=", 10000.0),
            details={"server": res.summary(), "texts_per_s_by_batch": txt},
            params={"server_flags": "--device cuda --text-max-batch 256 --image-max-batch 256"},
        ),
    ]
