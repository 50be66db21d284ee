"""Figure 15: the text tower on trimmed ids against all context_length positions (manifest text_trim). The same
graph (text.onnx, whose sequence axis is dynamic), in a session built as the server builds it, fed the same
tokenized queries cut after the batch's longest text as the Embedder cuts them, or padded to context_length,
in alternating blocks at each batch size. value = trimmed texts/s at its best batch, baseline = full-length
texts/s at its best batch; also the batch-1 latencies. Reported without a goal."""

from __future__ import annotations

import os
import time
from typing import Any

from tests.bench.common import Figure, log, skipped
from tests.bench.load import query_texts


def run(ctx: Any) -> list[Figure]:
    from moments_server.inference.embedder import trimmed_length
    from moments_server.inference.sessions import Tower, _session
    from moments_server.inference.tokenizer import TextTokenizer

    m = ctx.manifest()
    if not m.text_trim:
        why = f"{m.directory}'s text graph takes exactly {m.context_length} positions (exported before text_trim)"
        return [skipped("15.trim", "text tower on trimmed ids vs all positions (CPU)", why)]
    path = m.tower_path("text", "fp32")
    assert path is not None
    session = _session(path, ["CPUExecutionProvider"], os.cpu_count() or 1, False)
    tower = Tower("text", session, m.text_input, m.output, "fp32", "CPUExecutionProvider")
    tok = TextTokenizer(m.tokenizer_path, m.context_length)
    gen = query_texts("trim ")
    rounds = 2 if ctx.quick else 3
    block_s = ctx.sizes["batch_sweep_s"] / 2
    per_batch: dict[int, dict[str, float]] = {}
    cut_at: dict[int, int] = {}
    for b in sorted({1, *ctx.sizes["text_batches"][-3:]}):
        full = tok([next(gen) for _ in range(b)])
        cut_at[b] = trimmed_length(full, m.context_length)
        inputs = {"trimmed": full[:, : cut_at[b]], "full": full}
        for x in inputs.values():
            tower.run(x)  # warm-up
        best = {k: 0.0 for k in inputs}
        for _ in range(rounds):
            for key, x in inputs.items():
                t, n = time.perf_counter(), 0
                while time.perf_counter() - t < block_s:
                    tower.run(x)
                    n += b
                best[key] = max(best[key], n / (time.perf_counter() - t))
        per_batch[b] = best
        rates = f"trimmed ({cut_at[b]} positions) {best['trimmed']:.1f}/s, full {best['full']:.1f}/s"
        log(f"  text tower batch {b}: {rates}")
    top = {k: max(per_batch, key=lambda b: per_batch[b][k]) for k in ("trimmed", "full")}
    value, base = per_batch[top["trimmed"]]["trimmed"], per_batch[top["full"]]["full"]
    f = Figure(
        "15.trim",
        "text tower on trimmed ids vs all context_length positions (CPU, fp32, same graph)",
        round(value, 1),
        "texts/s",
        baseline=f"the same graph on all {m.context_length} positions at its best batch ({top['full']}), alternating",
        baseline_value=round(base, 1),
        params={"batches": sorted(per_batch), "rounds": rounds, "block_s": block_s, "threads": os.cpu_count()},
        details={"per_batch": per_batch, "positions": cut_at},
    )
    ratios = {b: round(r["trimmed"] / r["full"], 2) for b, r in per_batch.items()}
    f.reason = (
        f"queries like {next(query_texts())!r} cut to {cut_at} positions of {m.context_length}; trimmed/full by "
        f"batch {ratios}; batch 1: {1e3 / per_batch[1]['trimmed']:.1f} vs {1e3 / per_batch[1]['full']:.1f} ms"
    )
    return [f]
