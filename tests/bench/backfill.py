"""Figure 4: search p99 (one client, back-to-back text searches) while parallel ingest streams saturate the
image tower, against the idle p99 of the same server measured in the same run. Goal: ≤ 2× idle."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.bench.common import Figure, Goal, log
from tests.bench.data import copy_store
from tests.bench.load import (
    Profile,
    ingest_one,
    metric_value,
    metrics_text,
    query_texts,
    run_async,
    search_load,
    start_server,
    stop_server,
)


async def _under_backfill(target: str, videos: list[Any], n: int, warm_s: float) -> tuple[Any, int, float]:
    """Ingest every video in a loop (parallel streams) until `n` searches have run; returns
    (search result, ingests completed, seconds of backfill before the searches started)."""
    stop = asyncio.Event()
    done = [0]

    async def stream(i: int, stub: pb_grpc.VideoSearchStub) -> None:
        k = 0
        while not stop.is_set():
            try:
                await ingest_one(stub, videos[i % len(videos)], f"backfill-{i}-{k}")
                done[0] += 1
            except grpc.aio.AioRpcError as e:
                if not stop.is_set():
                    log(f"  backfill ingest failed: {e.code().name} {e.details()}")
                    await asyncio.sleep(0.5)
            k += 1

    async with grpc.aio.insecure_channel(target) as ch:
        stub = pb_grpc.VideoSearchStub(ch)
        tasks = [asyncio.create_task(stream(i, stub)) for i in range(len(videos))]
        await asyncio.sleep(warm_s)  # let decode fill the image tower's queue first
        res = await search_load(target, 1, count=n, texts=query_texts("backfill "))
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return res, done[0], warm_s


def run(ctx: Any) -> list[Figure]:
    from tests.bench.ingest_throughput import config_videos
    from tests.bench.run import VIDEO_FPS

    n = ctx.sizes["backfill_queries"]
    store_dir, facts = ctx.store(ctx.sizes["server_store"])
    data = copy_store(store_dir, ctx.work / "backfill-store")
    cfg = ctx.sizes["ingest_configs"][0]
    videos = ctx.shared.get("ingest_videos", {}).get(cfg["label"]) or config_videos(cfg, VIDEO_FPS)
    server, mport = start_server(ctx.model(), f"embedded:{data}", ctx.work / "backfill")
    try:
        run_async(lambda: search_load(server.target, 1, count=5, texts=query_texts("warm ")))
        log(f"  idle: {n} searches")
        idle = run_async(lambda: search_load(server.target, 1, count=n, texts=query_texts("idle ")))
        before = metrics_text(mport)
        log(f"  under backfill: {len(videos)} ingest streams of {cfg['label']} in a loop, {n} searches")
        t0 = time.perf_counter()
        with Profile(server.proc.pid, ctx.work / "profile-backfill.txt") as prof:
            busy, ingests, warm = run_async(lambda: _under_backfill(server.target, videos, n, 3.0))
        wall = time.perf_counter() - t0
        after = metrics_text(mport)
    finally:
        stop_server(server)
    img_busy = (
        metric_value(after, "moments_inference_seconds_sum", {"tower": "image"})
        - metric_value(before, "moments_inference_seconds_sum", {"tower": "image"})
    ) / wall
    si, sb = idle.summary(), busy.summary()
    p99_idle, p99_busy = si["latency_ms"]["p99"], sb["latency_ms"]["p99"]
    ti, tb = si.get("server_timing_ms", {}), sb.get("server_timing_ms", {})
    growth = {
        k: round(tb.get(k, {}).get("p99", 0.0) - ti.get(k, {}).get("p99", 0.0), 1)
        for k in ("queue", "inference", "store", "total")
    }
    worst = max(("queue", "inference", "store"), key=lambda k: growth[k])
    shares = prof.result.get("shares", {})
    f = Figure(
        "4",
        "search p99 under backfill (1 client)",
        p99_busy,
        "ms",
        baseline="idle p99, same server",
        baseline_value=p99_idle,
        goal=Goal("≤ 2 × idle p99", "<=", 2.0, "ratio"),
        params={
            "queries": n,
            "ingest_streams": len(videos),
            "ingest_video": cfg,
            "sample_fps": 1.0,
            "store_frames": facts.get("spec", {}).get("n"),
            "server_flags": "defaults",
        },
        details={
            "idle": si,
            "under_backfill": sb,
            "ingests_completed": ingests,
            "backfill_lead_s": warm,
            "image_tower_busy_fraction": round(img_busy, 3),
            "p99_growth_ms_by_stage": growth,
            "profile": prof.result,
        },
    )
    f.reason = (
        f"p50 {si['latency_ms']['p50']:.0f} → {sb['latency_ms']['p50']:.0f} ms; p99 growth by server stage: "
        + ", ".join(f"{k} +{v:.0f} ms" for k, v in growth.items() if k != "total")
        + f" (largest: {worst}); image tower busy {img_busy:.0%}; server CPU during backfill: "
        + ", ".join(f"{k} {v:.0%}" for k, v in list(shares.items())[:3])
    )
    return [f]
