"""Figure 4: search p99 (one client, back-to-back text searches) while parallel ingest streams saturate the
image tower, against the idle p99 of the same server measured in the same run. Goal: ≤ 2× idle.

Figure 4.image: the same for image queries (Search by image), which run on the image tower itself: on the CPU
in a session of their own at the searches' priority (inference/policy.py, image_search_session); in the
ingest session they queued behind ingest batches and ran at ingest's priority (ViT-B-32, 2 cores: 4-15×
idle). Goal: ≤ 2× idle, as the text queries'."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_shapes import COLORS, SHAPES
from tests.bench.common import Figure, Goal, log
from tests.bench.data import copy_store
from tests.bench.load import (
    LoadResult,
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


async def _under_backfill(
    target: str, videos: list[Any], loads: list[Callable[[], Awaitable[LoadResult]]], warm_s: float
) -> tuple[list[LoadResult], int, float]:
    """Ingest every video in a loop (parallel streams) while `loads` run one after the other; returns
    (their results, ingests completed, seconds of backfill before the searches started)."""
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
        results = [await load() for load in loads]
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results, done[0], warm_s


def _figure(fid: str, title: str, idle: LoadResult, busy: LoadResult, params: dict[str, Any], more: dict) -> Figure:
    si, sb = idle.summary(), busy.summary()
    ti, tb = si.get("server_timing_ms", {}), sb.get("server_timing_ms", {})
    growth = {
        k: round(tb.get(k, {}).get("p99", 0.0) - ti.get(k, {}).get("p99", 0.0), 1)
        for k in ("queue", "inference", "store", "total")
    }
    worst = max(("queue", "inference", "store"), key=lambda k: growth[k])
    f = Figure(
        fid,
        title,
        sb["latency_ms"]["p99"],
        "ms",
        baseline="idle p99, same server",
        baseline_value=si["latency_ms"]["p99"],
        goal=Goal("≤ 2 × idle p99", "<=", 2.0, "ratio"),
        params=params,
        details={"idle": si, "under_backfill": sb, "p99_growth_ms_by_stage": growth, **more},
    )
    shares = more["profile"].get("shares", {})
    f.reason = (
        f"p50 {si['latency_ms']['p50']:.0f} → {sb['latency_ms']['p50']:.0f} ms; p99 growth by server stage: "
        + ", ".join(f"{k} +{v:.0f} ms" for k, v in growth.items() if k != "total")
        + f" (largest: {worst}); image tower busy {more['image_tower_busy_fraction']:.0%}; server CPU during "
        + "backfill: "
        + ", ".join(f"{k} {v:.0%}" for k, v in list(shares.items())[:3])
    )
    return f


def run(ctx: Any) -> list[Figure]:
    from tests.bench.ingest_throughput import config_videos
    from tests.bench.load_run import shape_png
    from tests.bench.run import VIDEO_FPS

    n = ctx.sizes["backfill_queries"]
    store_dir, facts = ctx.store(ctx.sizes["server_store"])
    data = copy_store(store_dir, ctx.work / "backfill-store")
    cfg = ctx.sizes["ingest_configs"][0]
    videos = ctx.shared.get("ingest_videos", {}).get(cfg["label"]) or config_videos(cfg, VIDEO_FPS)
    images = [shape_png(c, s, i) for i, (c, s) in enumerate(itertools.islice(itertools.product(COLORS, SHAPES), 8))]
    server, mport = start_server(ctx.model(), f"embedded:{data}", ctx.work / "backfill")

    def texts(prefix: str) -> Callable[[], Awaitable[LoadResult]]:
        return lambda: search_load(server.target, 1, count=n, texts=query_texts(prefix))

    def pictures() -> Awaitable[LoadResult]:
        return search_load(server.target, 1, count=n, images=images)

    try:
        run_async(lambda: search_load(server.target, 1, count=5, texts=query_texts("warm ")))
        run_async(lambda: search_load(server.target, 1, count=5, images=images))
        log(f"  idle: {n} text searches, {n} image searches")
        idle_text, idle_image = run_async(texts("idle ")), run_async(pictures)
        before = metrics_text(mport)
        log(f"  under backfill: {len(videos)} ingest streams of {cfg['label']} in a loop, {n} text then {n} image")
        t0 = time.perf_counter()
        with Profile(server.proc.pid, ctx.work / "profile-backfill.txt") as prof:
            (busy_text, busy_image), ingests, warm = run_async(
                lambda: _under_backfill(server.target, videos, [texts("backfill "), pictures], 3.0)
            )
        wall = time.perf_counter() - t0
        after = metrics_text(mport)
    finally:
        stop_server(server)
    img_busy = (
        metric_value(after, "moments_inference_seconds_sum", {"tower": "image"})
        - metric_value(before, "moments_inference_seconds_sum", {"tower": "image"})
    ) / wall
    params = {
        "queries": n,
        "ingest_streams": len(videos),
        "ingest_video": cfg,
        "sample_fps": 1.0,
        "store_frames": facts.get("spec", {}).get("n"),
        "server_flags": "defaults",
    }
    more = {
        "ingests_completed": ingests,
        "backfill_lead_s": warm,
        "image_tower_busy_fraction": round(img_busy, 3),
        "profile": prof.result,
    }
    return [
        _figure("4", "search p99 under backfill (1 client)", idle_text, busy_text, params, more),
        _figure(
            "4.image",
            "image-query search p99 under backfill (1 client)",
            idle_image,
            busy_image,
            {**params, "query_images": "8 shapes PNGs, 128×128"},
            more,
        ),
    ]
