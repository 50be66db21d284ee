"""Figure 6 and the store figures of issue 3.

- 6: kNN + graph hop (FindDescriptor k=10 → FindClip, the server's search query) against the bare FAISS
  search of the same index in the same process, at 100k and 1M. Goal: the hop adds ≤ 20 % (ratio ≤ 1.2).
- S.inproc / S.tcp: that query's p50/p99 in-process and over TCP through the `aperturedb` SDK (the
  embedded store's wire listener in its own process), against bare FAISS. Goal (in-process, 100k):
  p50 ≤ 1.2 × bare FAISS + 1 ms.
- S.filtered: one video of 1,000, p50 at 1M. Goal ≤ 5 ms.
- S.insert: bulk insert of descriptors with their clips in batched queries (one video of 1,000 frames per
  query), into a fresh store, in-process (goal ≥ 20,000 descriptors/s) and over TCP (reported); the same
  insert into a Flat set shows what the HNSW graph costs. HNSW graph insertion is deferred (the store's
  exactly-searched tail, up to TAIL_MAX pending vectors per set): S.insert.inproc is a load within that
  bound, with the time until the graph holds everything; S.insert.sustained loads past it, where the
  committing writer inserts into the graph itself.
- S.reopen / S.rss: opening the 1M store (index loaded, caught up from SQLite) and its process RSS.
  Goal: reopen ≤ 5 s.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace
from typing import Any

from tests.bench.common import Figure, Goal, log, summarize
from tests.bench.scale import run_probe


def _tcp_search(ctx: Any, size: str, n: int) -> dict[str, Any]:
    from moments_server.catalog import queries
    from moments_server.store.connector import open_connector
    from tests.live import StoreListener

    data_dir, _ = ctx.store(size)
    spec = ctx.store_spec(size)
    q = ctx.shared["probes"][size]["queries"][:n]
    listener = StoreListener(data_dir, ctx.work)
    try:
        conn = open_connector(listener.url)
        try:
            cmds = queries.search(spec.set_name, 10, None, False)
            for v in q[:5]:
                conn.query(cmds, [v.tobytes()])
            lat = []
            for v in q:
                t = time.perf_counter()
                resp, _ = conn.query(cmds, [v.tobytes()])
                lat.append(time.perf_counter() - t)
                if not isinstance(resp, list):
                    raise RuntimeError(f"TCP search failed: {resp}")
        finally:
            conn.close()
    finally:
        listener.stop()
    return {"latency_ms": summarize(lat), "ssl": False, "queries": len(q)}


def _insert(ctx: Any, videos: int, tcp: bool, engine: str = "HNSW", tag: str = "") -> dict[str, Any]:
    """Insert `videos` synthetic videos (1,000 descriptors + clips each, one query per video) into a fresh
    store; then wait until the HNSW graph holds every descriptor (in-process only)."""
    from moments_server.store.embedded import Engine
    from tests.bench.data import fill, set_commands

    spec = replace(ctx.store_spec("10k"), engine=engine, n_videos=videos)
    where = ctx.work / f"insert-{'tcp' if tcp else 'inproc'}-{engine}-{videos}{tag}"
    if tcp:
        from moments_server.store.connector import open_connector
        from tests.live import StoreListener

        listener = StoreListener(where, ctx.work)
        conn = open_connector(listener.url)
        try:
            conn.query(set_commands(spec))
            stats = fill(conn.query, spec, range(videos), progress_every=0)
        finally:
            conn.close()
            listener.stop()
    else:
        eng = Engine(where)
        try:
            eng.query(set_commands(spec))
            stats = fill(eng.query, spec, range(videos), progress_every=0)
            stats["pending_after_load"] = eng.pending_vectors()
            t = time.perf_counter()
            eng.wait_indexed()
            stats["graph_catch_up_s"] = round(time.perf_counter() - t, 3)
            load_s = stats["seconds"] - stats["generate_s"]
            stats["indexed_descriptors_per_s"] = round(stats["descriptors"] / (load_s + stats["graph_catch_up_s"]), 1)
        finally:
            eng.close()
    stats["engine"] = engine
    return stats


def run(ctx: Any) -> list[Figure]:
    figs: list[Figure] = []
    tcp: dict[str, Any] = {}
    for size in ("100k", "1M"):
        pr = run_probe(ctx, size)
        n = pr["spec"].n
        hop = summarize(pr["search"]["latency_s"])
        bare = summarize(pr["bare_faiss"]["latency_s"])
        find = summarize(pr["find_descriptor_only"]["latency_s"])
        split = {
            "bare FAISS": bare["p50"],
            "FindDescriptor (SQLite rows, JSON) - FAISS": round(find["p50"] - bare["p50"], 3),
            "FindClip hop": round(hop["p50"] - find["p50"], 3),
        }
        worst = max(list(split)[1:], key=lambda k: split[k])
        figs.append(
            Figure(
                f"6.{size}",
                f"FindDescriptor→FindClip p50 vs bare FAISS, {n:,} frames",
                hop["p50"],
                "ms",
                baseline="bare FAISS search, same index",
                baseline_value=bare["p50"],
                goal=Goal("graph hop adds ≤ 20 % (ratio ≤ 1.2)", "<=", 1.2, "ratio"),
                params={"frames": n, "k": 10, "queries": hop["n"], "in_process": True},
                details={
                    "query_ms": hop,
                    "find_descriptor_only_ms": find,
                    "bare_faiss_ms": bare,
                    "p50_split_ms": split,
                    "profile_own_time": pr["search"].get("profile"),
                },
                reason="p50 split: " + ", ".join(f"{k} {v:.2f} ms" for k, v in split.items()) + f" (largest above "
                f"FAISS: {worst}); own time (cProfile): "
                + ", ".join(f"{name} {own:.0%}" for name, own, _ in (pr["search"].get("profile") or [])[:3]),
            )
        )
        figs.append(
            Figure(
                f"S.inproc.{size}",
                f"store query p50 in-process (k=10 → FindClip), {n:,} frames",
                hop["p50"],
                "ms",
                baseline="bare FAISS search",
                baseline_value=bare["p50"],
                goal=Goal("p50 ≤ 1.2 × bare FAISS + 1 ms", "<=", round(1.2 * bare["p50"] + 1.0, 4))
                if size == "100k"
                else None,
                details={"query_ms": hop, "bare_faiss_ms": bare},
                reason=f"p99 {hop['p99']:.2f} ms (bare FAISS p99 {bare['p99']:.2f} ms)",
            )
        )
        log(f"  over TCP through the SDK: {n:,} frames")
        tcp[size] = _tcp_search(ctx, size, ctx.sizes["tcp_queries"])
        t = tcp[size]["latency_ms"]
        figs.append(
            Figure(
                f"S.tcp.{size}",
                f"store query p50 over TCP via the aperturedb SDK, {n:,} frames",
                t["p50"],
                "ms",
                baseline="bare FAISS search",
                baseline_value=bare["p50"],
                details=tcp[size],
                reason=f"p99 {t['p99']:.2f} ms; in-process p50 {hop['p50']:.2f} ms, so the wire adds "
                f"{t['p50'] - hop['p50']:.2f} ms",
            )
        )
    big = ctx.shared["probes"]["1M"]
    n_big = big["spec"].n
    one = big["filtered"]["one_video"]
    fl = summarize(one["latency_s"])
    figs.append(
        Figure(
            "S.filtered.1M",
            f"filtered search (one video of {big['spec'].n_videos:,}) p50, {n_big:,} frames",
            fl["p50"],
            "ms",
            goal=Goal("p50 ≤ 5 ms", "<=", 5.0),
            details={"latency_ms": fl, "constraints": one["constraints"]},
            reason=f"exact over the video's {big['spec'].frames} candidates; p99 {fl['p99']:.1f} ms; "
            + "own time (cProfile): "
            + ", ".join(f"{name} {own:.0%}" for name, own, _ in one.get("profile", [])[:4]),
        )
    )
    figs.append(
        Figure(
            "S.reopen.1M",
            f"reopen time, {n_big:,} frames",
            big["open_s"],
            "s",
            goal=Goal("≤ 5 s", "<=", 5.0),
            details={
                "open_s": big["open_s"],
                "close_s": big.get("close_s"),
                "first_open_process_s (incl. imports, catch-up)": big.get("first_open_process_s"),
            },
            reason="Engine(data_dir) in a fresh process: SQLite open, persisted FAISS index read, catch-up check "
            "(page cache warm from the run's earlier reads)",
        )
    )
    figs.append(
        Figure(
            "S.rss.1M",
            f"store process RSS, {n_big:,} frames",
            round(big["rss_mib"]["after_searches"], 1),
            "MiB",
            details={"rss_mib": big["rss_mib"]},
            reason=f"{big['rss_mib']['after_searches'] / max(n_big, 1) * 2**20:.0f} bytes per frame (vectors 2,048 B "
            f"+ HNSW links)",
        )
    )

    from moments_server.store.embedded.vectors import TAIL_MAX

    # The inserts commit with fsync: write back what earlier figures left in the page cache first (the 1M
    # store's build leaves GiBs), so that the fsyncs measured are the inserts' own.
    os.sync()
    vids = ctx.sizes["insert_videos_inproc"]
    rounds = ctx.sizes["insert_rounds"]
    log(f"  bulk insert in-process: {vids} videos x 1,000 descriptors + clips, HNSW and Flat in turn, {rounds} rounds")
    _insert(ctx, 2, tcp=False, tag="-warm-up")  # untimed: this process's first engine writes pay one-off costs
    runs: dict[str, list[dict[str, Any]]] = {"HNSW": [], "Flat": []}
    for r in range(rounds):
        for kind in runs:
            runs[kind].append(_insert(ctx, vids, tcp=False, engine=kind, tag=f"-{r}"))

    def median_run(xs: list[dict[str, Any]]) -> dict[str, Any]:
        ranked = sorted(xs, key=lambda x: x["descriptors_per_s"])
        out = dict(ranked[len(ranked) // 2])
        out["rounds_descriptors_per_s"] = [x["descriptors_per_s"] for x in xs]
        return out

    ins, ins_flat = median_run(runs["HNSW"]), median_run(runs["Flat"])
    figs.append(
        Figure(
            "S.insert.inproc",
            f"bulk insert in-process (descriptors + clips, 1 video per query), {vids * 1000:,} descriptors",
            ins["descriptors_per_s"],
            "descriptors/s",
            baseline="same insert into a Flat set",
            baseline_value=ins_flat["descriptors_per_s"],
            goal=Goal("≥ 20,000 descriptors/s", ">=", 20_000.0),
            params={"tail_max": TAIL_MAX, "videos": vids, "rounds": rounds, "statistic": "median of the rounds"},
            details={"hnsw": ins, "flat": ins_flat},
            reason=f"median of {rounds} rounds (HNSW {ins['rounds_descriptors_per_s']}, Flat "
            f"{ins_flat['rounds_descriptors_per_s']}); HNSW graph insertion deferred: "
            f"{ins['pending_after_load']:,} descriptors pending after the "
            f"load, in the graph {ins['graph_catch_up_s']:.1f} s later ({ins['indexed_descriptors_per_s']:,.0f} "
            f"descriptors/s load + graph); loads past {TAIL_MAX:,} pending per set: S.insert.sustained",
        )
    )
    sv = ctx.sizes["insert_videos_sustained"]
    log(f"  bulk insert in-process past the tail bound: {sv} videos (HNSW)")
    sus = _insert(ctx, sv, tcp=False)
    figs.append(
        Figure(
            "S.insert.sustained",
            f"bulk insert in-process, {sv * 1000:,} descriptors (past the deferred-insertion bound of {TAIL_MAX:,})"
            if sv * 1000 > TAIL_MAX
            else f"bulk insert in-process, {sv * 1000:,} descriptors (within the deferred-insertion bound)",
            sus["descriptors_per_s"],
            "descriptors/s",
            baseline="load within the bound",
            baseline_value=ins["descriptors_per_s"],
            params={"tail_max": TAIL_MAX, "videos": sv},
            details=sus,
            reason=f"reported (no goal); past {TAIL_MAX:,} pending the committing writer inserts into the graph "
            f"(~60 us per 512-d vector on one core); {sus['indexed_descriptors_per_s']:,.0f} descriptors/s "
            f"load + graph",
        )
    )
    tv = ctx.sizes["insert_videos_tcp"]
    log(f"  bulk insert over TCP: {tv} videos")
    ins_tcp = _insert(ctx, tv, tcp=True)
    figs.append(
        Figure(
            "S.insert.tcp",
            "bulk insert over TCP via the SDK (descriptors + clips)",
            ins_tcp["descriptors_per_s"],
            "descriptors/s",
            baseline="in-process",
            baseline_value=ins["descriptors_per_s"],
            details=ins_tcp,
            reason="reported (no goal)",
        )
    )
    built = ctx._stores.get("1M", (None, {}))[1]
    if built and not built.get("reused"):
        b = built["build"]
        next(f for f in figs if f.id == "S.insert.inproc").details["1M_store_build"] = b
    return figs
