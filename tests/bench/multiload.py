"""Search load from several client processes (so that the load generator is not what bounds a server that
uses many cores), and the server's optional `--workers` flag.

Each client process has its own grpc.aio channels (one connection each: servers sharing a port through
SO_REUSEPORT are balanced per connection) and `callers` concurrent callers issuing Search back to back.
All processes start at one shared monotonic instant (CLOCK_MONOTONIC is system-wide on Linux) and stop
`duration_s` later; the result is one LoadResult over all of them, with each process's own CPU time, so a
figure can say whether the clients were near a bound of their own.
"""

from __future__ import annotations

import asyncio
import functools
import multiprocessing as mp
import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.bench.common import REPO, Figure, skipped
from tests.bench.load import LoadResult, query_texts

# gRPC shares one connection between channels to the same target unless told not to
CHANNEL_OPTIONS = [("grpc.use_local_subchannel_pool", 1)]


@functools.lru_cache(maxsize=1)
def server_help() -> str:
    """`python -m moments_server --help`, once per process."""
    try:
        out = subprocess.run(
            [sys.executable, "-m", "moments_server", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout


def workers_flags(workers: int | None) -> tuple[list[str], str]:
    """Server flags for `workers` processes, and how the server will run: ([], "server default") when not
    asked; `--workers N` only when the server's --help lists it (so figures run before and after it exists)."""
    if workers is None:
        return [], "server default"
    if "--workers" in server_help():
        return ["--workers", str(workers)], f"--workers {workers}"
    if workers == 1:
        return [], "1 process (the server has no --workers flag)"
    raise RuntimeError(f"the server's --help lists no --workers flag, so {workers} workers cannot be asked for")


def worker_runs(ctx: Any, figs: list[Figure], figure: str, what: str) -> Iterator[tuple[str, list[str], str]]:
    """(figure id suffix, server flags, how it runs) for each server worker count of the run (--workers);
    a count this server cannot run adds a skipped figure `figure` + suffix instead. `what` names the figures,
    with {w} for the count."""
    for w in list(getattr(ctx, "workers", None) or [None]):
        sfx = f".w{w}" if w is not None else ""
        try:
            flags, how = workers_flags(w)
        except RuntimeError as e:
            figs.append(skipped(f"{figure}{sfx}", what.format(w=w), str(e)))
            continue
        yield sfx, flags, how


async def _client(
    target: str, index: int, callers: int, channels: int, start_at_v: Any, duration_s: float, top_k: int, ready: Any
) -> dict[str, Any]:
    import grpc

    from moments.v1 import moments_pb2 as pb
    from moments.v1 import moments_pb2_grpc as pb_grpc

    chans = [grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS) for _ in range(max(1, min(channels, callers)))]
    stubs = [pb_grpc.VideoSearchStub(c) for c in chans]
    texts = query_texts(f"p{index} ")
    lat: list[float] = []
    timings: list[tuple[float, float, float, float]] = []
    errors: Counter[str] = Counter()
    try:
        # connect every channel before the clock starts
        await asyncio.gather(*(s.Search(pb.SearchRequest(text=next(texts), top_k=top_k), timeout=120) for s in stubs))
        ready.put(index)
        while start_at_v.value == 0.0:  # the parent sets the start instant once every client is connected
            await asyncio.sleep(0.005)
        start_at = float(start_at_v.value)
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        deadline = start_at + duration_s
        cpu0 = time.process_time()

        async def one(i: int) -> None:
            stub = stubs[i % len(stubs)]
            while time.monotonic() < deadline:
                t = time.perf_counter()
                try:
                    reply = await stub.Search(pb.SearchRequest(text=next(texts), top_k=top_k), timeout=120)
                except grpc.aio.AioRpcError as e:
                    errors[e.code().name] += 1
                    continue
                lat.append(time.perf_counter() - t)
                tm = reply.timing
                timings.append((tm.queue_ms, tm.inference_ms, tm.store_ms, tm.total_ms))

        await asyncio.gather(*(one(i) for i in range(callers)))
        wall = time.monotonic() - start_at
        cpu = time.process_time() - cpu0
    finally:
        for c in chans:
            await c.close()
    return {"latencies_s": lat, "timings": timings, "errors": dict(errors), "wall_s": wall, "cpu_s": cpu}


def _client_main(
    target: str,
    index: int,
    callers: int,
    channels: int,
    start_at: Any,
    duration_s: float,
    top_k: int,
    ready: Any,
    out: Any,
) -> None:
    try:
        res = asyncio.run(_client(target, index, callers, channels, start_at, duration_s, top_k, ready))
    except BaseException as e:  # reported to the parent, which raises it
        ready.put(index)
        out.put((index, {"error": f"{type(e).__name__}: {e}"}))
        return
    out.put((index, res))


def multiproc_search_load(
    target: str,
    procs: int,
    callers: int,
    duration_s: float,
    channels: int = 4,
    top_k: int = 10,
    started: threading.Event | None = None,
) -> tuple[LoadResult, dict[str, Any]]:
    """`procs` client processes × `callers` concurrent callers each, for `duration_s`; (combined result,
    client facts: processes, callers, per-process QPS and CPU cores busy). `started` is set when every
    client is connected and the clock starts (for work that should overlap the load)."""
    ctx = mp.get_context("spawn")  # grpc does not survive fork
    ready, out = ctx.Queue(), ctx.Queue()
    start_at = ctx.Value("d", 0.0)
    ps = [
        ctx.Process(
            target=_client_main,
            args=(target, i, callers, channels, start_at, duration_s, top_k, ready, out),
            daemon=True,
        )
        for i in range(procs)
    ]
    for p in ps:
        p.start()
    results: dict[int, dict[str, Any]] = {}
    try:
        for _ in ps:
            ready.get(timeout=180)
        start_at.value = time.monotonic() + 0.05
        if started is not None:
            started.set()
        while len(results) < procs:
            try:
                i, r = out.get(timeout=duration_s + 300)
            except queue.Empty as e:
                missing = sorted(set(range(procs)) - set(results))
                raise RuntimeError(f"client processes did not report: {missing}") from e
            results[i] = r
    finally:
        for p in ps:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    bad = [r["error"] for r in results.values() if "error" in r]
    if bad:
        raise RuntimeError(f"a client process failed: {bad[0]}")
    res = LoadResult(procs * callers, max(r["wall_s"] for r in results.values()))
    for r in results.values():
        res.latencies_s += r["latencies_s"]
        res.timings += [(t[0], t[1], t[2], t[3]) for t in r["timings"]]
        res.errors.update(r["errors"])
    facts = {
        "client_processes": procs,
        "callers_per_process": callers,
        "channels_per_process": channels,
        "qps_per_process": [round(len(results[i]["latencies_s"]) / results[i]["wall_s"], 1) for i in sorted(results)],
        "client_cpu_cores_per_process": [round(results[i]["cpu_s"] / results[i]["wall_s"], 3) for i in sorted(results)],
    }
    return res, facts
