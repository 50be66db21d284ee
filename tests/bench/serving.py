"""Figure 10: the serving path against the engine under it (issue 10), measured in one run.

- 10.<model>.mp: Search QPS through gRPC with the load from `procs` client processes × `callers` concurrent
  callers each (so the client is not the bound), against the server's own Embedder alone in this process
  fed by the same number of concurrent callers (tests/bench/embedder_alone.py). Server and Embedder blocks
  alternate, so both see the same machine. Goal ≥ 0.7×. For the bench model (random ViT-B-32, the server
  store) and for shapes-demo with 2 ingested videos (tiny inference: the serving path's own cost shows).
- 10.shapes.c64: Search QPS through gRPC, 64 clients in ONE client process, shapes-demo, 2 videos
  (the issue's CPU figure). Goal ≥ 1,300 QPS.
- 10.shapes.p50: search p50 with 1 client against the bare text encode (batch 1) + the bare FAISS search of
  the index the same store persisted, in alternating blocks. Goal ≤ bare + 2 ms.

The server's worker count is a parameter (`run.py --workers N[,M]`): each count gets its own figures
(`.wN` appended to the id); `--workers` reaches the server only when its --help lists the flag.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from tests.bench.common import Figure, Goal, log, percentile, summarize
from tests.bench.embedder_alone import EmbedderAlone
from tests.bench.load import LoadResult, ingest_parallel, query_texts, run_async, search_load, start_server, stop_server
from tests.bench.multiload import multiproc_search_load, worker_runs

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")] * 5


def server_cpu_s(pid: int) -> float:
    """CPU seconds of the server process and its children (worker processes, if any)."""
    import psutil

    p = psutil.Process(pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        try:
            t = q.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def pooled(parts: list[LoadResult]) -> LoadResult:
    out = LoadResult(parts[0].clients if parts else 0, sum(p.wall_s for p in parts))
    for p in parts:
        out.latencies_s += p.latencies_s
        out.timings += p.timings
        out.errors.update(p.errors)
    return out


def shapes_setup(work: Path) -> tuple[Path, Path]:
    """(shapes-demo model dir, an embedded store holding 2 shapes videos ingested at 1 fps by the server)."""
    from moments_client.sample_video import write_shapes_video
    from tests.bench.model import shapes_model

    model = shapes_model()
    vids = []
    for i, codec in enumerate(("h264", "vp9")):
        p = work / f"shapes-{i}.{'mp4' if codec == 'h264' else 'webm'}"
        write_shapes_video(p, SHAPES, seconds_each=2.0, codec=codec, seed=i)
        vids.append(p)
    store = work / "shapes-store"
    server, _ = start_server(model, f"embedded:{store}", work / "shapes-ingest")
    try:
        run_async(lambda: ingest_parallel(server.target, vids, "shapes"))
    finally:
        stop_server(server)  # closing persists the store's vector index, read below as the bare kNN
    return model, store


def qps_vs_alone(
    target: str, pid: int, alone: EmbedderAlone, procs: int, callers: int, duration: float, rounds: int, tag: str
) -> tuple[LoadResult, LoadResult, dict[str, Any]]:
    """Alternating blocks: the Embedder alone, then the server under the multi-process load."""
    srv: list[LoadResult] = []
    emb: list[LoadResult] = []
    facts: dict[str, Any] = {"server_cores_busy": [], "clients": []}
    for r in range(rounds):
        emb.append(alone.measure(procs * callers, duration, f"{tag} alone{r} "))
        cpu0 = server_cpu_s(pid)
        res, cf = multiproc_search_load(target, procs, callers, duration)
        facts["server_cores_busy"].append(round((server_cpu_s(pid) - cpu0) / res.wall_s, 3))
        facts["clients"].append(cf)
        srv.append(res)
        log(f"  {tag} round {r}: server {res.qps:.1f} QPS, Embedder alone {emb[-1].qps:.1f} /s")
    return pooled(srv), pooled(emb), facts


def mp_figure(
    fid: str, what: str, server: LoadResult, alone: LoadResult, facts: dict[str, Any], params: dict[str, Any]
) -> Figure:
    s, a = server.summary(), alone.summary()
    f = Figure(
        fid,
        f"Search QPS through gRPC vs the Embedder alone, {what}, "
        f"{params['client_processes']}×{params['callers_per_process']} clients",
        round(server.qps, 2),
        "QPS",
        baseline=f"the server's Embedder alone in one process, {server.clients} concurrent callers",
        baseline_value=round(alone.qps, 2),
        goal=Goal("≥ 0.7 × the Embedder alone", ">=", 0.7, "ratio"),
        params=params,
        details={"server": s, "embedder_alone": a, **facts},
    )
    busy = facts["server_cores_busy"]
    ccpu = [max(c["client_cpu_cores_per_process"]) for c in facts["clients"]]
    f.reason = (
        f"server p50 {s['latency_ms'].get('p50')} ms p99 {s['latency_ms'].get('p99')} ms, "
        f"server cores busy {busy}; Embedder alone p50 {a['latency_ms'].get('p50')} ms; "
        f"busiest client process used {max(ccpu):.2f} cores"
    )
    return f


def latency_vs_bare(target: str, model: Path, store: Path, n: int, rounds: int) -> dict[str, Any]:
    """1-client search latencies and the bare text encode (b=1) + bare FAISS search, alternating blocks."""
    from tests.bench.search_latency import bare_search, bare_text, load_index, text_tower

    threads = os.cpu_count() or 1
    index = load_index(store)
    enc: list[float] = []
    knn: list[float] = []
    parts: list[LoadResult] = []
    run_async(lambda: search_load(target, 1, count=10, texts=query_texts("warm ")))
    texts = [t for _, t in zip(range(n), query_texts("bare "), strict=False)]
    for r in range(rounds):
        bt = bare_text(model, texts[r::rounds], threads)
        enc += bt["encode_s"]
        knn += bare_search(index, bt["vectors"])
        parts.append(
            run_async(lambda r=r: search_load(target, 1, count=len(texts[r::rounds]), texts=query_texts(f"one{r} ")))
        )
    text_tower.cache_clear()
    return {"e2e": pooled(parts), "encode_s": enc, "knn_s": knn, "frames": int(index.ntotal)}


def run(ctx: Any) -> list[Figure]:
    sz = ctx.sizes
    procs, callers, duration, rounds = (
        sz["serving_procs"],
        sz["serving_callers"],
        sz["serving_duration_s"],
        sz["serving_rounds"],
    )
    figs: list[Figure] = []

    # -- shapes-demo, 2 videos -----------------------------------------------------------------------------
    model, store = shapes_setup(ctx.work)
    alone = EmbedderAlone(model)
    try:
        for sfx, flags, how in worker_runs(ctx, figs, "10.shapes", "shapes-demo figures with {w} server workers"):
            server, _ = start_server(model, f"embedded:{store}", ctx.work / f"shapes{sfx}", *flags)
            try:
                pid = server.proc.pid
                common = {"model": "shapes-demo", "store": "2 shapes videos at 1 fps", "server_workers": how}
                lat = latency_vs_bare(server.target, model, store, sz["serving_latency_queries"], 3)
                one = lat["e2e"].summary()
                p50 = one["latency_ms"]["p50"]
                bare = (percentile(lat["encode_s"], 50) + percentile(lat["knn_s"], 50)) * 1e3
                f = Figure(
                    f"10.shapes.p50{sfx}",
                    f"search p50, 1 client, shapes-demo, {lat['frames']} frames",
                    p50,
                    "ms",
                    baseline="bare text encode b=1 + bare FAISS search (p50s)",
                    baseline_value=round(bare, 3),
                    goal=Goal("p50 ≤ bare encode + bare kNN + 2 ms", "<=", round(bare + 2.0, 3)),
                    params={**common, "queries": len(lat["e2e"].latencies_s), "frames": lat["frames"]},
                    details={
                        "end_to_end": one,
                        "bare_encode_ms": summarize(lat["encode_s"]),
                        "bare_knn_ms": summarize(lat["knn_s"]),
                    },
                )
                st = one.get("server_timing_ms", {})
                f.reason = (
                    f"p50 {p50:.2f} ms = bare {bare:.2f} ms {p50 - bare:+.2f} ms; server total p50 "
                    f"{st.get('total', {}).get('p50')} ms (queue {st.get('queue', {}).get('p50')}, inference "
                    f"{st.get('inference', {}).get('p50')}, store {st.get('store', {}).get('p50')})"
                )
                figs.append(f)

                emb64 = alone.measure(64, duration, "alone64 ")
                cpu0 = server_cpu_s(pid)
                c64 = asyncio.run(
                    search_load(server.target, 64, duration_s=duration, channels=16, texts=query_texts("c64 "))
                )
                busy = round((server_cpu_s(pid) - cpu0) / c64.wall_s, 3)
                s64 = c64.summary()
                f = Figure(
                    f"10.shapes.c64{sfx}",
                    "Search QPS through gRPC, 64 clients in one client process, shapes-demo, 2 videos",
                    round(c64.qps, 2),
                    "QPS",
                    baseline="the server's Embedder alone, 64 concurrent callers",
                    baseline_value=round(emb64.qps, 2),
                    goal=Goal("≥ 1,300 QPS", ">=", 1300.0),
                    params={**common, "clients": 64, "client_processes": 1, "channels": 16, "duration_s": duration},
                    details={"server": s64, "embedder_alone": emb64.summary(), "server_cores_busy": busy},
                    reason=f"p50 {s64['latency_ms'].get('p50')} ms, p99 {s64['latency_ms'].get('p99')} ms, "
                    f"server cores busy {busy} (the load generator shares the machine)",
                )
                figs.append(f)

                srv, emb, facts = qps_vs_alone(server.target, pid, alone, procs, callers, duration, rounds, "shapes")
                params = {
                    **common,
                    "client_processes": procs,
                    "callers_per_process": callers,
                    "duration_s": duration,
                    "rounds": rounds,
                }
                figs.append(mp_figure(f"10.shapes.mp{sfx}", "shapes-demo, 2 videos", srv, emb, facts, params))
            finally:
                stop_server(server)
    finally:
        alone.close()

    # -- the bench model on the server store -----------------------------------------------------------------
    bench_store, facts = ctx.store(sz["server_store"])
    alone = EmbedderAlone(ctx.model())
    try:
        for sfx, flags, how in worker_runs(ctx, figs, "10.model.mp", "bench model figure with {w} server workers"):
            server, _ = start_server(ctx.model(), f"embedded:{bench_store}", ctx.work / f"serving{sfx}", *flags)
            try:
                run_async(lambda t=server.target: search_load(t, 4, count=8, texts=query_texts("warm ")))
                srv, emb, more = qps_vs_alone(
                    server.target, server.proc.pid, alone, procs, callers, duration, rounds, "bench"
                )
                frames = facts.get("spec", {}).get("n")
                params = {
                    "model": ctx.manifest().name + " (random weights)",
                    "store_frames": frames,
                    "server_workers": how,
                    "client_processes": procs,
                    "callers_per_process": callers,
                    "duration_s": duration,
                    "rounds": rounds,
                    "embedder_provider": alone.provider,
                }
                what = f"{ctx.manifest().name}, {frames:,} frames" if frames else ctx.manifest().name
                figs.append(mp_figure(f"10.model.mp{sfx}", what, srv, emb, more, params))
            finally:
                stop_server(server)
    finally:
        alone.close()
    return figs
