"""The CUDA serving paths, measured in one process (figure 7 runs it on a card; `--device cpu` rehearses it):

1. the image tower at the largest bucket through device-resident I/O (inference/device_io.py) against the old
   path (Tower.run: bind_cpu_input, output bound to the CPU), same session;
2. device I/O with CUDA graphs against without (two sessions, cuda_graphs yes / no; skipped off CUDA);
3. the Embedder under the provider's serving policy (inference/policy.py): ingest frames/s through the ingest
   lane alone, then beside one client searching back to back, and that client's latency with and without
   ingest. Issue goals (H200): ingest beside a searcher >= 0.8x alone; search p99 <= 2x idle.

python -m tests.bench.cuda_paths --model DIR [--device cuda|cpu] [--seconds 5] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rate(run: Any, items: int, seconds: float) -> float:
    run()
    t, n = time.perf_counter(), 0
    while time.perf_counter() - t < seconds:
        run()
        n += items
    return round(n / (time.perf_counter() - t), 1)


def tower_paths(model_dir: Path, device: str, batch: int, seconds: float) -> dict[str, Any]:
    """Figures 1 and 2: frames/s of the image tower at `batch`."""
    from moments_server.inference.manifest import load_manifest
    from moments_server.inference.sessions import load_towers

    m = load_manifest(model_dir)
    size = m.image_size
    frames = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    _, image = load_towers(m, device, 1, cuda_graphs="no")
    old = _rate(lambda: image.run(frames), batch, seconds)
    image.use_buckets([batch], (size, size, 3), m.embed_dim)
    dev = _rate(lambda: image.embed(frames), batch, seconds)
    out: dict[str, Any] = {
        "batch": batch,
        "provider": image.provider,
        "old_path_frames_per_s": old,
        "device_io_frames_per_s": dev,
        "device_io_vs_old": round(dev / old, 3),
    }
    if device != "cuda":
        out["cuda_graphs"] = "skipped: CUDA graphs are the CUDA provider's"
        return out
    try:
        _, graphed = load_towers(m, device, 1, cuda_graphs="yes")
        graphed.use_buckets([batch], (size, size, 3), m.embed_dim)
        graphed.warm(batch)
        with_graphs = _rate(lambda: graphed.embed(frames), batch, seconds)
        out.update(graphs_frames_per_s=with_graphs, graphs_vs_device_io=round(with_graphs / dev, 3))
    except RuntimeError as e:  # cuda_graphs yes: the reason it could not capture
        out["cuda_graphs"] = f"failed: {e}"
    return out


def _pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.array(xs) * 1e3, q)), 2) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


async def _lanes(embedder: Any, seconds: float, ingest: bool, search: bool, streams: int) -> dict[str, Any]:
    from moments_server.inference.batcher import Lane

    size = embedder.image_size
    frame = np.zeros((size, size, 3), dtype=np.uint8)
    deadline = time.perf_counter() + seconds
    frames, latencies = [0], []

    async def ingest_stream() -> None:
        batch = [frame] * 64
        while time.perf_counter() < deadline:
            await embedder.embed_frames(batch, Lane.INGEST)
            frames[0] += len(batch)

    async def searcher() -> None:
        i = 0
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            await embedder.embed_texts([f"a searched query number {i}"])  # distinct: a cache miss each
            latencies.append(time.perf_counter() - t)
            i += 1

    started = time.perf_counter()
    jobs = [ingest_stream() for _ in range(streams if ingest else 0)] + ([searcher()] if search else [])
    await asyncio.gather(*jobs)
    wall = time.perf_counter() - started
    return {
        "frames_per_s": round(frames[0] / wall, 1) if ingest else None,
        "searches": len(latencies),
        "search_p50_ms": _pct(latencies, 50),
        "search_p99_ms": _pct(latencies, 99),
    }


def ingest_beside_search(model_dir: Path, device: str, seconds: float, streams: int = 8) -> dict[str, Any]:
    """Figure 3, under the provider's own serving policy (the server's defaults)."""
    from moments_server.config import Settings
    from moments_server.inference.embedder import Embedder
    from moments_server.inference.manifest import load_manifest
    from moments_server.inference.policy import policy_of
    from moments_server.inference.sessions import load_towers

    settings = Settings(model_dir=model_dir, device=device)
    m = load_manifest(model_dir)
    text, image = load_towers(m, device, settings.threads, cuda_graphs=settings.cuda_graphs)
    policy = policy_of(text.provider, settings)

    async def main() -> dict[str, Any]:
        embedder = Embedder(m, text, image, policy, settings.max_delay_ms / 1e3, settings.max_queue, 0)
        embedder.warm_up(autotune=True)
        embedder.start()
        try:
            idle = await _lanes(embedder, seconds, ingest=False, search=True, streams=streams)
            alone = await _lanes(embedder, seconds, ingest=True, search=False, streams=streams)
            both = await _lanes(embedder, seconds, ingest=True, search=True, streams=streams)
        finally:
            await embedder.stop()
        return {
            "policy": vars(policy),
            "max_batch": {"text": embedder.text_max_batch, "image": embedder.image_max_batch},
            "cuda_graphs": embedder.cuda_graphs,
            "search_alone": idle,
            "ingest_alone": alone,
            "ingest_with_search": both,
            "ingest_ratio": _ratio(both["frames_per_s"], alone["frames_per_s"]),
            "search_p99_ratio": _ratio(both["search_p99_ms"], idle["search_p99_ms"]),
        }

    return asyncio.run(main())


def measure(model_dir: Path, device: str, seconds: float, batch: int) -> dict[str, Any]:
    return {
        "device": device,
        "towers": tower_paths(model_dir, device, batch, seconds),
        "ingest": ingest_beside_search(model_dir, device, seconds),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.device == "cuda":
        from tests.bench.embedder_alone import preload_cuda

        preload_cuda()
    result = measure(args.model, args.device, args.seconds, args.batch)
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
