"""`make load`: many concurrent searchers and a few concurrent ingests against one real server, for a bounded time.

    python -m tests.bench.load_run                # 200 searchers + 4 ingest loops for 60 s
    python -m tests.bench.load_run --quick        # 20 searchers + 1 ingest loop for 10 s (rehearsed by pytest)
    python -m tests.bench.load_run --workers 2    # the server's --workers

Loopback only: the server (shapes-demo model, embedded store) is started here on 127.0.0.1. Searchers mix
text and image Search with GetVideo and ListVideos; ingest loops re-ingest short videos with replace, so
the library keeps its size and memory can level off. Reports every non-OK status (the run fails on any),
p50/p99 per RPC, and the server's RSS (summed over its child processes) sampled every second, with a
verdict on whether it is flat after warm-up. Writes load-<machine>-<date>[-quick].json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import itertools
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from moments_shapes import COLORS, SHAPES, draw
from tests.bench.common import RESULTS, _clean, log, machine_info, machine_slug, now_date, summarize
from tests.bench.load import query_texts
from tests.live import LiveServer

# A searcher's calls, by weight.
MIX = (("search_text", 80), ("search_image", 10), ("get_video", 5), ("list_videos", 5))
# RSS growth after warm-up (last quarter against the first quarter after warm-up) still called flat.
FLAT_MIB = 32.0
FLAT_FRACTION = 0.05


def shape_png(color: str, shape: str, seed: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(draw(color, shape, (128, 128), seed)).save(out, format="PNG")
    return out.getvalue()


class RssSampler:
    """The server's RSS plus that of all its descendants (workers), every `every` seconds, in a thread."""

    def __init__(self, pid: int, every: float = 1.0) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []  # (seconds since start, MiB)
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self.t0 = time.perf_counter()

    def total_mib(self) -> float:
        import psutil

        total = 0
        for p in [self.proc, *self.proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):  # a worker that just exited
                total += p.memory_info().rss
        return total / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((round(time.perf_counter() - self.t0, 2), round(self.total_mib(), 1)))
            except Exception:
                return
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self.t0 = time.perf_counter()
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


def rss_verdict(samples: list[tuple[float, float]], warmup_s: float) -> dict[str, Any]:
    """Flat when the mean of the last quarter after warm-up is within max(FLAT_MIB, FLAT_FRACTION) of the
    mean of the first quarter after warm-up."""
    after = [mib for t, mib in samples if t >= warmup_s]
    if len(after) < 4:
        return {
            "flat": None,
            "reason": f"only {len(after)} samples after the {warmup_s:.0f} s warm-up",
            "peak_mib": max((mib for _, mib in samples), default=None),
        }
    q = max(1, len(after) // 4)
    first, last = sum(after[:q]) / q, sum(after[-q:]) / q
    allowed = max(FLAT_MIB, FLAT_FRACTION * first)
    return {
        "flat": bool(last - first <= allowed),
        "warmup_s": warmup_s,
        "first_quarter_mib": round(first, 1),
        "last_quarter_mib": round(last, 1),
        "growth_mib": round(last - first, 1),
        "allowed_growth_mib": round(allowed, 1),
        "peak_mib": max(mib for _, mib in samples),
    }


def _ingest_requests(path: Path, vid: str) -> Iterator[pb.IngestRequest]:
    data = path.read_bytes()
    header = pb.IngestHeader(
        video_id=vid, filename=path.name, sampling=pb.SamplingOptions(fps=2), size_bytes=len(data), replace=True
    )
    yield pb.IngestRequest(header=header)
    for i in range(0, len(data), 256 * 1024):
        yield pb.IngestRequest(chunk=data[i : i + 256 * 1024])
    yield pb.IngestRequest(end=pb.IngestEnd())  # the upload is complete (as the clients end it)


class Load:
    def __init__(self, target: str, videos: list[Path], images: list[bytes], seed: int) -> None:
        self.target = target
        self.videos = videos
        self.images = images
        self.rng = random.Random(seed)
        self.latencies: dict[str, list[float]] = defaultdict(list)
        self.errors: Counter[str] = Counter()  # "rpc CODE" → count
        self.error_samples: list[str] = []
        self.texts = query_texts()
        self.known_ids: list[str] = []

    def _fail(self, rpc: str, e: grpc.aio.AioRpcError) -> None:
        self.errors[f"{rpc} {e.code().name}"] += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(f"{rpc}: {e.code().name}: {e.details()}")

    async def searcher(self, stub: pb_grpc.VideoSearchStub, deadline: float, seed: int) -> None:
        rng = random.Random(seed)
        kinds, weights = zip(*MIX, strict=True)
        while time.perf_counter() < deadline:
            kind = rng.choices(kinds, weights)[0]
            t = time.perf_counter()
            try:
                if kind == "search_text":
                    await stub.Search(pb.SearchRequest(text=next(self.texts), top_k=10), timeout=60)
                elif kind == "search_image":
                    await stub.Search(pb.SearchRequest(image=rng.choice(self.images), top_k=10), timeout=60)
                elif kind == "get_video":
                    await stub.GetVideo(pb.GetVideoRequest(video_id=rng.choice(self.known_ids)), timeout=60)
                else:
                    await stub.ListVideos(pb.ListVideosRequest(page_size=50), timeout=60)
            except grpc.aio.AioRpcError as e:
                self._fail(kind, e)
                continue
            self.latencies[kind].append(time.perf_counter() - t)

    async def ingester(self, stub: pb_grpc.VideoSearchStub, deadline: float, n: int) -> None:
        # replace among a few ids per loop: the library keeps its size while the store keeps changing
        for i in itertools.count():
            if time.perf_counter() >= deadline:
                return
            vid = f"load-{n}-{i % 3}"
            t = time.perf_counter()
            try:
                done = False
                async for ev in stub.Ingest(
                    _ingest_requests(self.videos[(n + i) % len(self.videos)], vid), timeout=120
                ):
                    done = done or ev.WhichOneof("event") == "done"
                if not done:
                    self.errors["ingest no-done-event"] += 1
                    continue
            except grpc.aio.AioRpcError as e:
                self._fail("ingest", e)
                continue
            self.latencies["ingest"].append(time.perf_counter() - t)


async def _run_load(
    target: str, videos: list[Path], images: list[bytes], searchers: int, ingests: int, duration_s: float, seed: int
) -> tuple[Load, float, float]:
    load = Load(target, videos, images, seed)
    opts = [("grpc.use_local_subchannel_pool", 1), ("grpc.max_send_message_length", 64 << 20)]
    # a few connections, so that servers sharing the port (--workers) each get their share
    chans = [grpc.aio.insecure_channel(target, options=opts) for _ in range(4)]
    stubs = [pb_grpc.VideoSearchStub(c) for c in chans]
    try:
        # the library the searchers see: one video per ingest loop id, ingested before the clock starts
        for n in range(max(1, ingests)):
            for i in range(3):
                vid = f"load-{n}-{i}"
                async for _ in stubs[0].Ingest(_ingest_requests(videos[(n + i) % len(videos)], vid), timeout=120):
                    pass
                load.known_ids.append(vid)
        started = time.perf_counter()
        deadline = started + duration_s
        tasks = [load.searcher(stubs[i % len(stubs)], deadline, seed * 100_003 + i) for i in range(searchers)]
        tasks += [load.ingester(stubs[n % len(stubs)], deadline, n) for n in range(ingests)]
        await asyncio.gather(*tasks)
        return load, started, time.perf_counter() - started
    finally:
        for c in chans:
            await c.close()


def markdown(doc: dict[str, Any]) -> str:
    m, p, r = doc["meta"], doc["params"], doc["rss"]
    lines = [
        f"# Moments load run — {m['date']}{' (quick)' if p['quick'] else ''}",
        "",
        f"Machine: {m['machine'].get('cpu_model')}, {m['machine'].get('cpu_count')} CPUs; "
        f"load average at start {m['machine'].get('loadavg_start')}. Server: shapes-demo, embedded store, "
        f"workers={p['workers'] or 1}, loopback. {p['searchers']} searchers + {p['ingests']} ingest loops "
        f"for {doc['wall_s']:.1f} s.",
        "",
        f"**Unexpected errors: {doc['unexpected_errors']}**"
        + (f" ({', '.join(f'{k}: {v}' for k, v in doc['errors'].items())})" if doc["errors"] else ""),
        "",
        "| RPC | calls | per s | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for rpc, s in doc["rpcs"].items():
        lines.append(f"| {rpc} | {s['n']} | {s['per_s']:.1f} | {s['p50']:.1f} | {s['p99']:.1f} | {s['max']:.1f} |")
    flat = {True: "flat", False: "**growing**", None: "undecided"}[r["verdict"]["flat"]]
    v = r["verdict"]
    lines += [
        "",
        f"Server RSS (with children), sampled every {r['every_s']} s: {flat} after a {v.get('warmup_s', 0):.0f} s "
        f"warm-up (first quarter {v.get('first_quarter_mib', '–')} MiB, last quarter "
        f"{v.get('last_quarter_mib', '–')} MiB, allowed growth {v.get('allowed_growth_mib', '–')} MiB), "
        f"peak {v.get('peak_mib', '–')} MiB.",
        "",
        "RSS over time (s: MiB): "
        + ", ".join(f"{t:.0f}: {mib:.0f}" for t, mib in r["samples"][:: max(1, len(r["samples"]) // 20)]),
        "",
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.conftest import ensure_shapes_model

    searchers = args.searchers if args.searchers is not None else (20 if args.quick else 200)
    ingests = args.ingests if args.ingests is not None else (1 if args.quick else 4)
    duration = args.duration if args.duration is not None else (10.0 if args.quick else 60.0)
    model_dir = Path(args.model_dir) if args.model_dir else ensure_shapes_model()
    info = machine_info()
    with tempfile.TemporaryDirectory(prefix="moments-load-") as tmp:
        work = Path(tmp)
        videos = []
        for i, (color, shape) in enumerate(itertools.islice(itertools.product(COLORS, SHAPES), 0, 12, 3)):
            p = work / f"v{i}.mp4"
            write_shapes_video(p, [(color, shape), ("red", "circle")], seconds_each=2.0, fps=10, seed=i)
            videos.append(p)
        images = [shape_png(c, s, i) for i, (c, s) in enumerate(itertools.islice(itertools.product(COLORS, SHAPES), 8))]
        flags = ["--log-level", "WARNING"] + (["--workers", str(args.workers)] if args.workers else [])
        log(f"starting the server ({' '.join(flags)})")
        server = LiveServer(model_dir, f"embedded:{work / 'data'}", work, *flags)
        try:
            log(f"{searchers} searchers + {ingests} ingest loops for {duration:.0f} s on {server.target}")
            with RssSampler(server.proc.pid, args.rss_every) as rss:
                load, started, wall = asyncio.run(
                    _run_load(server.target, videos, images, searchers, ingests, duration, args.seed)
                )
        finally:
            server.stop()
    warmup = args.warmup if args.warmup is not None else max(5.0, 0.2 * duration)
    # the sampler started before the library was ingested: times from the load's start
    samples = [(round(t - (started - rss.t0), 2), m) for t, m in rss.samples]
    verdict = rss_verdict(samples, warmup)
    rpcs = {k: {**summarize(v), "per_s": round(len(v) / wall, 2)} for k, v in sorted(load.latencies.items()) if v}
    return _clean(
        {
            "meta": {
                "date": now_date(),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "machine": info,
                "command": " ".join(sys.argv),
            },
            "params": {
                "quick": args.quick,
                "searchers": searchers,
                "ingests": ingests,
                "duration_s": duration,
                "workers": args.workers,
                "seed": args.seed,
                "mix": dict(MIX),
            },
            "wall_s": round(wall, 3),
            "unexpected_errors": sum(load.errors.values()),
            "errors": dict(load.errors),
            "error_samples": load.error_samples,
            "rpcs": rpcs,
            "rss": {"every_s": args.rss_every, "samples": samples, "verdict": verdict},
        }
    )


def write(doc: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"load-{machine_slug(doc['meta']['machine'])}-{doc['meta']['date']}"
    if doc["params"]["quick"]:
        stem += "-quick"
    j, md = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    j.write_text(json.dumps(doc, indent=2) + "\n")
    md.write_text(markdown(doc))
    return j, md


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tests.bench.load_run", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 s, 20 searchers, 1 ingest loop")
    ap.add_argument("--searchers", type=int, help="concurrent searchers (default 200; quick 20)")
    ap.add_argument("--ingests", type=int, help="concurrent ingest loops (default 4; quick 1)")
    ap.add_argument("--duration", type=float, help="seconds of load (default 60; quick 10)")
    ap.add_argument("--workers", type=int, default=0, help="the server's --workers (0: not passed)")
    ap.add_argument("--warmup", type=float, help="seconds excluded from the RSS verdict (default 20%%, >= 5 s)")
    ap.add_argument("--rss-every", type=float, default=1.0, help="RSS sampling period in seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model-dir", help="a model directory (default: the cached shapes-demo test model)")
    ap.add_argument("--out", default=str(RESULTS), help="where the JSON and Markdown go")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    doc = run(args)
    j, md = write(doc, Path(args.out))
    print(markdown(doc))
    log(f"wrote {j} and {md}")
    return 1 if doc["unexpected_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
