"""Figure 8: fused against unfused towers on the CPU (issue 11). The same model directory's plain fp32 graphs
(text.onnx, image.onnx) and fused fp32 graphs (text.fused.onnx, image.fused.onnx: one onnxruntime Attention
node per layer, SkipLayerNorm and BiasGelu), each in a session built as the server builds it, timed in
alternating blocks at the same batch sizes. value = fused items/s at its best batch of the set, baseline =
unfused items/s at its best batch, ratio = fused / unfused. Goal: >= 1.15x."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from moments_server.inference.embedder import trimmed_length
from tests.bench.common import Figure, Goal, log, skipped

GOAL = Goal("fused ≥ 1.15 × unfused (CPU, same batch)", ">=", 1.15, "ratio")


def _rate(tower: Any, x: np.ndarray, seconds: float) -> float:
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        tower.run(x)
        n += len(x)
    return n / (time.perf_counter() - t)


def _inputs(m: Any, tower: str, batch: int, rng: np.random.Generator) -> np.ndarray:
    if tower == "image":
        return rng.integers(0, 256, (batch, m.image_size, m.image_size, 3), dtype=np.uint8)
    ids = np.zeros((batch, m.context_length), dtype=np.int64)
    ids[:, 0], ids[:, 1:9], ids[:, 9] = 49406, rng.integers(300, 40000, (batch, 8)), 49407
    # what the server sends: cut after the last token when the graph takes that (manifest text_trim)
    return ids[:, : trimmed_length(ids, m.context_length)] if m.text_trim else ids


def run(ctx: Any) -> list[Figure]:
    from moments_server.inference.sessions import Tower, _session

    m = ctx.manifest()
    if m.tower_path("text", "fp32_fused") is None or m.tower_path("image", "fp32_fused") is None:
        why = f"{m.directory} has no fused graphs (exported without them, or by an exporter before issue 11)"
        return [skipped(f"8.{t}", f"fused vs unfused {t} tower (CPU)", why) for t in ("image", "text")]
    threads = os.cpu_count() or 1
    rounds = 2 if ctx.quick else 3
    block_s = ctx.sizes["batch_sweep_s"] / 2
    rng = np.random.default_rng(0)
    figures = []
    for tower, batches in (("image", ctx.sizes["image_batches"]), ("text", ctx.sizes["text_batches"][-2:])):
        input_name = m.image_input if tower == "image" else m.text_input
        graphs = {}
        for key in ("fp32", "fp32_fused"):
            path = m.tower_path(tower, key)
            session = _session(path, ["CPUExecutionProvider"], threads, False)
            graphs[key] = Tower(tower, session, input_name, m.output, "fp32", "CPUExecutionProvider", key != "fp32")
        per_batch: dict[int, dict[str, float]] = {}
        for b in batches:
            x = _inputs(m, tower, b, rng)
            for g in graphs.values():
                g.run(x)  # warm-up
            best = {k: 0.0 for k in graphs}
            for _ in range(rounds):  # alternating blocks: load from other processes hits both alike
                for k, g in graphs.items():
                    best[k] = max(best[k], _rate(g, x, block_s))
            per_batch[b] = {"unfused_per_s": round(best["fp32"], 2), "fused_per_s": round(best["fp32_fused"], 2)}
            log(f"  {tower} batch {b}: unfused {best['fp32']:.1f}/s, fused {best['fp32_fused']:.1f}/s")
        # each graph at its own best batch of the set (the throughput a batcher would reach with it)
        b_f = max(per_batch, key=lambda b: per_batch[b]["fused_per_s"])
        b_u = max(per_batch, key=lambda b: per_batch[b]["unfused_per_s"])
        unit = "frames/s" if tower == "image" else "texts/s"
        fig = Figure(
            f"8.{tower}",
            f"fused vs unfused {tower} tower (CPU, fp32)",
            per_batch[b_f]["fused_per_s"],
            unit,
            baseline=f"unfused {tower}.onnx at its best batch ({b_u}), same run, alternating blocks",
            baseline_value=per_batch[b_u]["unfused_per_s"],
            goal=GOAL,
            params={
                "batches": list(batches),
                "threads": threads,
                "rounds": rounds,
                "block_s": block_s,
                "fused_batch": b_f,
            },
            details={
                "per_batch": per_batch,
                "ratio_per_batch": {b: round(v["fused_per_s"] / v["unfused_per_s"], 3) for b, v in per_batch.items()},
                "fused_operators": (m.raw.get("verification", {}).get("fused") or {})
                .get("fp32", {})
                .get("fused_operators", {}),
            },
        ).evaluate()
        if fig.met is False:
            per = fig.details["ratio_per_batch"]
            fig.reason = f"fused/unfused measured {fig.ratio}x (best batch of each); per batch {per}"
        figures.append(fig)
    return figures
