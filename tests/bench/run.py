"""`python -m tests.bench.run [--quick] [--only NAME,...] [--out DIR]`: every benchmark figure in one process run.

Writes `<out>/<machine>-<date>[-quick].json` (every figure with its baseline measured in the same run, the
ratio, the goal, met / not met with the measured reason, and every parameter) and a Markdown table
beside it. Figures are modules of this package, each with `run(ctx) -> list[Figure]`, in this order:

    search_latency     1  text search latency vs bare ONNX text encode + bare vector search
    search_throughput  2  QPS at 1/8/32/128 clients vs the text tower's best batch throughput
    ingest_throughput  3  ingest video-s/s vs the decode/embed pipeline bound, and vs a naive pipeline
    backfill           4  search p99 (text; 4.image: image queries) under a saturating ingest vs idle p99
    scale              5  10k/100k/1M stored frames: p50, RSS, recall@10, filtered exactness
    store_hop          6  FindDescriptor→FindClip vs bare FAISS; the store figures of issue 3
    gpu                7  CUDA provider + fp16 (skipped with the reason where there is no CUDA)
    fused              8  fused vs unfused towers on the CPU (same model directory, alternating blocks)
    decode_cpu         9  decode CPU per video-second at 1 fps: skip strategy vs the full decode, same frames
    serving           10  Search QPS through gRPC (many client processes) vs the Embedder alone; 64 clients
                          in one process and 1-client p50 vs bare encode + kNN, shapes-demo
    ingest_decode     11  ingest video-s/s of concurrent 720p h264 streams vs the host's bare decode bound
    live_lag          12  live ingest: searchable lag after a frame's last byte (p95), RSS over a long stream
    eval_quality      13  search quality (`moments eval`) of shapes-demo on the generated labelled corpus,
                          unmerged vs merged: HIT@1/5, mAP, nDCG@10, IoU@1 (+ eval-*.json/.md/.png)
    shots             14  shot-aware windows: moment IoU vs fixed windows; detection CPU / ingest CPU
    text_trim         15  the text tower on trimmed ids vs all context_length positions (same graph)

`--workers N[,M]` measures figures 10 and 11 once per server worker count (passed as the server's
`--workers` when its --help lists it); without it the server runs with its default.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bench.common import CACHE, RESULTS, Figure, failed, log, machine_info, merged, now_date, write_results

FIGURES = (
    "search_latency",
    "search_throughput",
    "ingest_throughput",
    "backfill",
    "scale",
    "store_hop",
    "gpu",
    "fused",
    "decode_cpu",
    "serving",
    "ingest_decode",
    "live_lag",
    "eval_quality",
    "shots",
    "text_trim",
)

# Every size the run uses; recorded in the JSON. Full sizes are chosen so that a run with the caches
# warm (model export, test videos, synthetic stores) takes under 20 minutes on the 2-core machine.
SIZES: dict[str, dict[str, Any]] = {
    "full": {
        "store_videos": {"10k": 10, "100k": 100, "1M": 1000},  # x FRAMES_PER_VIDEO frames each
        "server_store": "100k",
        "latency_queries": 150,
        "throughput_clients": [1, 8, 32, 128],
        "throughput_duration_s": 20.0,
        "throughput_tuned_variant": True,
        "text_batches": [1, 2, 4, 8, 16, 32, 64],
        "image_batches": [4, 8, 16, 32, 64],
        "batch_sweep_s": 4.0,
        "ingest_configs": [
            {"label": "720p h264", "width": 1280, "height": 720, "codec": "h264", "seconds": 30, "videos": 3},
            {"label": "1080p h264", "width": 1920, "height": 1080, "codec": "h264", "seconds": 30, "videos": 3},
            {"label": "720p hevc", "width": 1280, "height": 720, "codec": "hevc", "seconds": 30, "videos": 3},
        ],
        "naive_seconds": 15,
        "backfill_queries": 60,
        "scale_queries": 100,
        "store_queries": 300,
        "filtered_queries": 50,
        "insert_videos_inproc": 40,
        "insert_rounds": 3,
        "insert_videos_sustained": 120,
        "insert_videos_tcp": 5,
        "tcp_queries": 200,
        "serving_procs": 4,
        "serving_callers": 16,
        "serving_duration_s": 10.0,
        "serving_rounds": 2,
        "serving_latency_queries": 150,
        "decode_streams": 4,
        "decode_seconds": 30,
    },
    "quick": {
        "store_videos": {"10k": 2, "100k": 5, "1M": 10},
        "server_store": "100k",
        "latency_queries": 12,
        "throughput_clients": [1, 8, 32, 128],
        "throughput_duration_s": 3.0,
        "throughput_tuned_variant": False,
        "text_batches": [1, 4, 16],
        "image_batches": [8, 16],
        "batch_sweep_s": 1.0,
        "ingest_configs": [
            {"label": "360p h264", "width": 640, "height": 360, "codec": "h264", "seconds": 6, "videos": 2},
            {"label": "360p hevc", "width": 640, "height": 360, "codec": "hevc", "seconds": 6, "videos": 1},
        ],
        "naive_seconds": 3,
        "backfill_queries": 8,
        "scale_queries": 20,
        "store_queries": 40,
        "filtered_queries": 10,
        "insert_videos_inproc": 2,
        "insert_rounds": 1,
        "insert_videos_sustained": 3,
        "insert_videos_tcp": 1,
        "tcp_queries": 30,
        "serving_procs": 4,
        "serving_callers": 16,
        "serving_duration_s": 3.0,
        "serving_rounds": 1,
        "serving_latency_queries": 30,
        "decode_streams": 2,
        "decode_seconds": 6,
    },
}
VIDEO_FPS = 30
SEED = 0


@dataclass
class Ctx:
    quick: bool
    out: Path
    work: Path
    sizes: dict[str, Any]
    workers: list[int] | None = None  # server worker counts for figures 10 and 11 (None: the server's default)
    model_dir: Path | None = None
    model_facts: dict[str, Any] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # results one figure hands to a later one
    _stores: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)

    def model(self) -> Path:
        if self.model_dir is None:
            from tests.bench.model import model_dir

            self.model_dir, self.model_facts = model_dir(CACHE)
        return self.model_dir

    def manifest(self) -> Any:
        from moments_server.inference.manifest import load_manifest

        return load_manifest(self.model())

    def search_server(self) -> tuple[Any, int]:
        """One server on the server store, shared by the read-only figures (1 and 2); (LiveServer, metrics port)."""
        if "search_server" not in self.shared:
            from tests.bench.load import start_server

            store_dir, _ = self.store(self.sizes["server_store"])
            self.shared["search_server"] = start_server(self.model(), f"embedded:{store_dir}", self.work / "search")
        return self.shared["search_server"]

    def close(self) -> None:
        if "search_server" in self.shared:
            from tests.bench.load import stop_server

            stop_server(self.shared.pop("search_server")[0])

    def store_spec(self, size: str) -> Any:
        from tests.bench.data import FRAMES_PER_VIDEO, StoreSpec

        m = self.manifest()
        return StoreSpec(
            self.sizes["store_videos"][size], FRAMES_PER_VIDEO, m.embed_dim, SEED, m.descriptor_set, m.identity()
        )

    def store(self, size: str) -> tuple[Path, dict[str, Any]]:
        """The cached synthetic store of `size` ("10k" | "100k" | "1M"), in the server's data model."""
        if size not in self._stores:
            from tests.bench.data import cached_store

            self._stores[size] = cached_store(self.store_spec(size))
        return self._stores[size]


def server_defaults() -> dict[str, Any]:
    """The server settings every server in the run uses unless a figure says otherwise (its params)."""
    from moments_server.config import Settings

    s = Settings()
    keys = (
        "text_max_batch",
        "image_max_batch",
        "max_delay_ms",
        "max_queue",
        "text_cache_size",
        "intra_op_threads",
        "device",
        "store_threads",
        "max_concurrent_ingests",
    )
    out = {k: getattr(s, k) for k in keys}
    out["intra_op_threads_effective"] = s.threads
    return out


def prepare(ctx: Ctx) -> int:
    """Build every cache a run needs (so that the measured run itself stays short)."""
    from tests.bench.decode_cpu import long_gop_video
    from tests.bench.ingest_throughput import config_videos

    t = time.perf_counter()
    log(f"model: {ctx.model()}")
    for cfg in ctx.sizes["ingest_configs"]:
        config_videos(cfg, VIDEO_FPS)
    long_gop_video(ctx.sizes)
    for size in ctx.sizes["store_videos"]:
        path, facts = ctx.store(size)
        log(f"store {size}: {path} ({'reused' if facts.get('reused') else 'built'}: {facts.get('build')})")
    shutil.rmtree(ctx.work, ignore_errors=True)
    log(f"caches ready in {time.perf_counter() - t:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tests.bench.run", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes, for development (~2 minutes)")
    p.add_argument("--only", default="", help=f"comma-separated figures, of: {', '.join(FIGURES)}")
    p.add_argument("--out", type=Path, default=RESULTS, help="results folder (default tests/bench/results)")
    p.add_argument(
        "--prepare",
        action="store_true",
        help="only build the caches (model export, test videos, synthetic stores), measure nothing",
    )
    p.add_argument("--keep-work", action="store_true", help="keep the run's scratch folder (server logs, profiles)")
    p.add_argument(
        "--merge",
        action="store_true",
        help="replace only this run's figures in the day's results file (with --only: re-measure some figures)",
    )
    p.add_argument(
        "--workers",
        default="",
        help="server worker counts for figures 10 and 11, comma-separated (passed as --workers when the server "
        "offers it; default: the server's own default)",
    )
    args = p.parse_args(argv)
    try:
        workers = [int(x) for x in args.workers.split(",") if x.strip()] or None
    except ValueError:
        p.error(f"--workers takes comma-separated integers, not {args.workers!r}")
    only = [x.strip() for x in args.only.split(",") if x.strip()] or list(FIGURES)
    unknown = [x for x in only if x not in FIGURES]
    if unknown:
        p.error(f"unknown figure(s) {unknown}; choose from {', '.join(FIGURES)}")
    os.environ.setdefault("ADB_LOG_FILE", "")
    sizes = SIZES["quick" if args.quick else "full"]
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=CACHE))
    ctx = Ctx(args.quick, args.out, work, sizes, workers)
    started = time.perf_counter()
    meta: dict[str, Any] = {
        "date": now_date(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "only": only,
        "command": " ".join([os.path.basename(sys.executable), "-m", "tests.bench.run", *(argv or sys.argv[1:])]),
        "machine": machine_info(),
        "sizes": sizes,
        "seed": SEED,
        "server_settings": server_defaults(),
        "video_fps": VIDEO_FPS,
        "server_workers": workers,
    }
    figures: list[Figure] = []
    timings: dict[str, float] = {}

    def save(meta: dict[str, Any], figures: list[Figure]) -> tuple[Path, Path]:
        return (
            write_results(args.out, *merged(args.out, meta, figures))
            if args.merge
            else write_results(args.out, meta, figures)
        )

    if args.prepare:
        return prepare(ctx)
    try:
        stores = CACHE / "bench-stores"
        have = {p.name for p in stores.iterdir()} if stores.exists() else set()
        needs_store = any(name in ("scale", "store_hop") for name in only)
        if needs_store and not args.quick and not any(n.startswith("v") and n.split("-")[1] == "1000000" for n in have):
            log(
                "the 1M-frame store is not cached yet: this run builds it first (many minutes on 2 cores); "
                "`python -m tests.bench.run --prepare` builds every cache without measuring"
            )
        # figures whose module says NEEDS_MODEL = False run without the model export
        if any(getattr(importlib.import_module(f"tests.bench.{name}"), "NEEDS_MODEL", True) for name in only):
            log(f"model: {ctx.model()} ({ctx.model_facts.get('how')})")
            m = ctx.manifest()
            meta["model"] = {
                "name": m.name,
                "weights": "random init (speed only)",
                "embed_dim": m.embed_dim,
                "image_size": m.image_size,
                "context_length": m.context_length,
                "fingerprint": m.fingerprint,
                **ctx.model_facts,
            }
        for name in only:
            t = time.perf_counter()
            load0 = os.getloadavg()
            log(f"== {name}")
            mod = importlib.import_module(f"tests.bench.{name}")
            try:
                figs = mod.run(ctx)
            except Exception as e:
                traceback.print_exc()
                figs = [failed(name, name, e)]
            for f in figs:
                f.evaluate()
                log(f"   {f.id} {f.title}: {f.value} {f.unit} (baseline {f.baseline_value}, met={f.met}) {f.reason}")
            for f in figs:
                f.params.setdefault("loadavg_1m_before_after", [round(load0[0], 2), round(os.getloadavg()[0], 2)])
            figures.extend(figs)
            timings[name] = round(time.perf_counter() - t, 1)
            meta["figure_seconds"] = timings
            meta["duration_s"] = round(time.perf_counter() - started, 1)
            save(meta, figures)  # after each figure, so a crash keeps what was measured
    finally:
        ctx.close()
        meta["duration_s"] = round(time.perf_counter() - started, 1)
        meta["figure_seconds"] = timings
        meta["machine"]["loadavg_end"] = list(os.getloadavg())
        meta["stores"] = {k: v[1] for k, v in ctx._stores.items()}
        j, md = save(meta, figures)
        log(f"wrote {j} and {md} in {meta['duration_s']} s")
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"scratch kept: {work}")
    broken = [f.id for f in figures if f.reason.startswith("the figure failed")]
    if broken:
        log(f"figures that failed to run: {', '.join(broken)}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
