"""Figure 2: search throughput with 1, 8, 32, 128 concurrent clients (QPS, p99, and the batch sizes the
server's batcher formed), against the ONNX text tower's best throughput at its best batch size measured in
this process in the same run. Goal at 32 clients: ≥ 0.9 of it."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tests.bench.common import Figure, Goal, hist_diff, hist_from_prometheus, log
from tests.bench.load import (
    Profile,
    metric_value,
    metrics_text,
    query_texts,
    run_async,
    search_load,
    start_server,
    stop_server,
)


def text_batch_sweep(model_dir: Path, batches: list[int], seconds: float, threads: int) -> dict[int, float]:
    """Texts/s of the bare text tower (tokenize + session run) at each batch size."""
    from tests.bench.search_latency import text_tower

    text, tok = text_tower(model_dir, threads)
    gen = query_texts("sweep ")
    out: dict[int, float] = {}
    for b in batches:
        ids = tok([next(gen) for _ in range(b)])
        text.run(ids)
        n, t0 = 0, time.perf_counter()
        while True:
            ids = tok([next(gen) for _ in range(b)])
            text.run(ids)
            n += b
            if time.perf_counter() - t0 >= seconds and n >= 2 * b:
                break
        out[b] = round(n / (time.perf_counter() - t0), 3)
        log(f"  bare text tower batch {b}: {out[b]:.1f} texts/s")
    text_tower.cache_clear()
    return out


def run(ctx: Any) -> list[Figure]:
    threads = os.cpu_count() or 1
    sweep = text_batch_sweep(ctx.model(), ctx.sizes["text_batches"], ctx.sizes["batch_sweep_s"], threads)
    best_b = max(sweep, key=lambda b: sweep[b])
    best = sweep[best_b]
    _, facts = ctx.store(ctx.sizes["server_store"])
    duration = ctx.sizes["throughput_duration_s"]
    server, mport = ctx.search_server()
    figs: list[Figure] = []
    levels: dict[int, dict[str, Any]] = {}
    try:
        run_async(lambda: search_load(server.target, 4, count=8, texts=query_texts("warm ")))
        for clients in ctx.sizes["throughput_clients"]:
            before = metrics_text(mport)
            prof = None
            if clients == 32:
                prof = Profile(server.proc.pid, ctx.work / "profile-search-32.txt")
                prof.__enter__()
            try:
                res = run_async(
                    lambda c=clients: search_load(server.target, c, duration_s=duration, texts=query_texts(f"c{c} "))
                )
            finally:
                if prof is not None:
                    prof.__exit__(None, None, None)
            after = metrics_text(mport)
            lab = {"tower": "text", "lane": "search"}
            hist = hist_diff(
                hist_from_prometheus(after, "moments_batch_size", lab),
                hist_from_prometheus(before, "moments_batch_size", lab),
            )
            inf_s = metric_value(after, "moments_inference_seconds_sum", {"tower": "text"}) - metric_value(
                before, "moments_inference_seconds_sum", {"tower": "text"}
            )
            store_s = metric_value(after, "moments_store_query_seconds_sum", {"kind": "search"}) - metric_value(
                before, "moments_store_query_seconds_sum", {"kind": "search"}
            )
            batches = hist.get("count", 0.0)
            s = res.summary()
            s["batch_size_histogram"] = {k: v for k, v in hist.items() if k.startswith("le=") and v}
            s["batches"] = batches
            s["mean_batch"] = round(hist.get("sum", 0.0) / batches, 2) if batches else None
            s["text_tower_busy_fraction"] = round(inf_s / res.wall_s, 3) if res.wall_s else None
            s["store_busy_s_per_s"] = round(store_s / res.wall_s, 3) if res.wall_s else None
            if prof is not None:
                s["profile"] = prof.result
            levels[clients] = s
            log(
                f"  {clients} clients: {res.qps:.1f} QPS, p99 {s['latency_ms'].get('p99')} ms, mean batch "
                f"{s['mean_batch']}, text tower busy {s['text_tower_busy_fraction']}"
            )
    finally:
        ctx.close()  # the last figure on the shared search server
    # The same 32 clients against a server whose text batches are capped at the bare tower's best batch:
    # measures how much of the gap the batch size the batcher forms explains.
    tuned: dict[str, Any] | None = None
    if (
        ctx.sizes.get("throughput_tuned_variant")
        and 32 in levels
        and levels[32].get("mean_batch")
        and abs(levels[32]["mean_batch"] - best_b) > 1
    ):
        log(f"  32 clients again with --text-max-batch {best_b}")
        store_dir, _ = ctx.store(ctx.sizes["server_store"])
        server, mport = start_server(
            ctx.model(), f"embedded:{store_dir}", ctx.work / "throughput-tuned", "--text-max-batch", str(best_b)
        )
        try:
            run_async(lambda: search_load(server.target, 4, count=8, texts=query_texts("warm ")))
            before = metrics_text(mport)
            res = run_async(lambda: search_load(server.target, 32, duration_s=duration, texts=query_texts("t32 ")))
            after = metrics_text(mport)
        finally:
            stop_server(server)
        lab = {"tower": "text", "lane": "search"}
        hist = hist_diff(
            hist_from_prometheus(after, "moments_batch_size", lab),
            hist_from_prometheus(before, "moments_batch_size", lab),
        )
        tuned = res.summary()
        tuned["batch_size_histogram"] = {k: v for k, v in hist.items() if k.startswith("le=") and v}
        tuned["mean_batch"] = round(hist.get("sum", 0.0) / hist["count"], 2) if hist.get("count") else None
    for clients, s in levels.items():
        goal = Goal("QPS ≥ 0.9 × bare text tower best", ">=", 0.9, "ratio") if clients == 32 else None
        f = Figure(
            f"2.c{clients}",
            f"search QPS, {clients} concurrent clients",
            s["qps"],
            "QPS",
            baseline=f"bare text tower best (batch {best_b})",
            baseline_value=best,
            goal=goal,
            params={
                "clients": clients,
                "duration_s": duration,
                "store_frames": facts.get("spec", {}).get("n"),
                "server_flags": "defaults (text_max_batch 32, max_delay_ms 2)",
                "intra_op_threads": threads,
            },
            details=s,
        )
        busy = s.get("text_tower_busy_fraction") or 0.0
        f.reason = (
            f"p99 {s['latency_ms'].get('p99')} ms; mean batch {s['mean_batch']} (bare best at {best_b}); "
            f"text tower busy {busy:.0%} of the wall"
        )
        if s.get("mean_batch"):
            near = min(sweep, key=lambda b: abs(b - s["mean_batch"]))
            f.reason += (
                f"; the bare tower at batch {near} gives {sweep[near]:.1f} texts/s vs {best:.1f} at batch {best_b}"
            )
            if busy >= 0.9:
                f.reason += " → the text tower is saturated: the batch size the batcher forms decides the QPS"
        if clients == 32 and "profile" in s and s["profile"].get("shares"):
            top = list(s["profile"]["shares"].items())[:3]
            f.reason += "; server profile (py-spy, Python threads): " + ", ".join(f"{k} {v:.0%}" for k, v in top)
        figs.append(f)
    if tuned is not None:
        figs.append(
            Figure(
                "2.c32.tuned",
                f"search QPS, 32 clients, server --text-max-batch {best_b} (the bare best batch)",
                tuned["qps"],
                "QPS",
                baseline=f"bare text tower best (batch {best_b})",
                baseline_value=best,
                goal=Goal("QPS ≥ 0.9 × bare text tower best", ">=", 0.9, "ratio"),
                params={"clients": 32, "duration_s": duration, "server_flags": f"--text-max-batch {best_b}"},
                details=tuned,
                reason=f"variant of 2.c32 (default flags: {levels[32]['qps']:.2f} QPS, mean batch "
                f"{levels[32]['mean_batch']}); here mean batch {tuned['mean_batch']}, p99 "
                f"{tuned['latency_ms'].get('p99')} ms",
            )
        )
    figs.append(
        Figure(
            "2.sweep",
            "bare text tower throughput by batch",
            best,
            "texts/s",
            params={"batches": ctx.sizes["text_batches"], "seconds_each": ctx.sizes["batch_sweep_s"]},
            details={"texts_per_s_by_batch": sweep, "best_batch": best_b},
        )
    )
    ctx.shared["text_best"] = (best_b, best)
    return figs
