"""Figure 7: GPU. With a usable CUDA device (onnxruntime's CUDA provider and a driver that answers): the
towers with the CUDA provider (fp16 files where the manifest recommends them) — bare image frames/s and
text/s by batch size, then the server (`--device cuda`) ingest frames/s and text QPS at 128 clients.
Goals on an H100: ≥ 5,000 frames/s ingest and ≥ 10,000 text QPS through the server. Then the CUDA serving
paths (tests/bench/cuda_paths.py): device-resident I/O vs the bind_cpu_input path, CUDA graphs on/off, and
ingest frames/s beside one searching client vs alone under the CUDA policy (goals: ≥ 0.8×, search p99 ≤ 2× idle).
Without CUDA the figure is skipped and the reason recorded."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tests.bench.common import Figure, Goal, log, skipped

BATCHES = (32, 64, 128, 256, 512)
PATH_FIGURES = (
    ("7.device_io", "GPU image tower, device-resident I/O vs the bind_cpu_input path, batch 256"),
    ("7.cuda_graphs", "GPU image tower, CUDA graphs vs none (both device I/O), batch 256"),
    ("7.ingest_beside_search", "GPU ingest frames/s beside one searching client vs alone (CUDA policy)"),
    ("7.search_p99_beside_ingest", "GPU search p99 beside ingest vs idle (CUDA policy)"),
)


def path_figures(paths: dict[str, Any]) -> list[Figure]:
    """Figures of tests/bench/cuda_paths.measure on the card."""
    towers, ingest = paths["towers"], paths["ingest"]
    titles = dict(PATH_FIGURES)
    graphs = towers.get("graphs_frames_per_s")
    return [
        Figure(
            "7.device_io",
            titles["7.device_io"],
            towers["device_io_frames_per_s"],
            "frames/s",
            baseline="Tower.run (bind_cpu_input), same session",
            baseline_value=towers["old_path_frames_per_s"],
            details=towers,
        ),
        Figure(
            "7.cuda_graphs",
            titles["7.cuda_graphs"],
            graphs,
            "frames/s",
            baseline="device I/O without graphs",
            baseline_value=towers["device_io_frames_per_s"],
            reason=str(towers.get("cuda_graphs", "")),
        ),
        Figure(
            "7.ingest_beside_search",
            titles["7.ingest_beside_search"],
            ingest["ingest_with_search"]["frames_per_s"],
            "frames/s",
            baseline="ingest alone",
            baseline_value=ingest["ingest_alone"]["frames_per_s"],
            goal=Goal("≥ 0.8 × ingest alone", ">=", 0.8, "ratio"),
            details=ingest,
        ),
        Figure(
            "7.search_p99_beside_ingest",
            titles["7.search_p99_beside_ingest"],
            ingest["ingest_with_search"]["search_p99_ms"],
            "ms",
            baseline="search p99 with no ingest",
            baseline_value=ingest["search_alone"]["search_p99_ms"],
            goal=Goal("≤ 2 × idle p99", "<=", 2.0, "ratio"),
        ),
    ]


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
        return [img, txt, *(skipped(fid, title, why) for fid, title in PATH_FIGURES)]
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
    from tests.bench.cuda_paths import measure

    paths = path_figures(measure(ctx.model(), "cuda", seconds=5.0, batch=256))
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
        *paths,
    ]
