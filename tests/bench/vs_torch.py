"""The ONNX core against torch eager, in one process (issue 11): what the server serves against what a reader of
ApertureDB's CLIP example would run.

    python -m tests.bench.vs_torch --model-dir DIR [--model-config JSON] [--device cuda|cpu] [--out FILE.json]
        [--image-batches 256,1024] [--text-batches 512] [--callers 1,16,128,1024] [--seconds 3]

The model directory must come from `moments_export --random-weights` (its manifest records the seed): torch
rebuilds the same model from the same seed, and the embeddings of both are compared first (cosine), so the two
sides are known to compute the same thing. Then, alternating ONNX and torch blocks per batch size:
- the image tower on uint8 frames from host memory to float32 embeddings back in host memory: the server's
  bare tower (the graph the server serves on the provider, device-resident I/O on CUDA) against torch eager
  running the export's own ImageTower module (fp16 on CUDA with the frames copied from pinned memory; fp32 on
  the CPU, where torch's fp16 is not what anyone serves);
- the text tower the same way, on query ids cut where the server cuts them (16 positions for short queries);
- the text tower at batch 1 (p50 latency), and the server's Embedder (tests/bench/embedder_alone.py) at each
  --callers level: QPS against the bare text tower's best, and one caller's p50 against batch 1.
Goals (H200): image >= 1.2x torch eager fp16, text >= 1.0x; the Embedder >= 0.85x the bare tower's best; one
caller's p50 <= batch 1's + 1 ms. On the CPU the figures are a rehearsal (tests/bench/test_vs_torch.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np


def _rate(run: Callable[[], Any], items: int, seconds: float) -> float:
    """Items/s of `run` (each call does `items`), after one warm-up call."""
    run()
    t, n = time.perf_counter(), 0
    while n == 0 or time.perf_counter() - t < seconds:
        run()
        n += items
    return n / (time.perf_counter() - t)


def _p50_ms(run: Callable[[], Any], seconds: float) -> float:
    run()
    lat: list[float] = []
    end = time.perf_counter() + seconds
    while not lat or time.perf_counter() < end:
        t = time.perf_counter()
        run()
        lat.append(time.perf_counter() - t)
    return float(np.percentile(lat, 50) * 1e3)


def torch_model(manifest: Any, config: Path | None) -> Any:
    """The manifest's model rebuilt with the export's seed (moments_export.cli.export_model's order)."""
    import torch

    from moments_export import load

    ident = (manifest.raw.get("training") or {}).get("identity") or {}
    if not ident.get("random_weights"):
        raise SystemExit(f"{manifest.directory}: not exported with --random-weights, torch cannot rebuild it")
    if config is not None:
        import open_clip

        open_clip.add_model_config(config)
    torch.manual_seed(int(ident.get("seed", 0)))
    torch.backends.mha.set_fastpath_enabled(False)
    return load.load_model(manifest.name, random_weights=True).model.eval()


class TorchTowers:
    """The export's own tower modules in eager mode: fp16 on CUDA, fp32 on the CPU."""

    def __init__(self, clip: Any, manifest: Any, device: str) -> None:
        import torch

        from moments_export.towers import ImageTower, TextTower

        self.torch = torch
        self.device = torch.device(device)
        self.dtype = torch.float16 if device == "cuda" else torch.float32
        clip = clip.to(self.device, self.dtype)
        raw = manifest.raw
        self.image = ImageTower(clip, raw["mean"], raw["std"], self.dtype).to(self.device).eval()
        self.text = TextTower(clip, trim=manifest.text_trim).to(self.device).eval()
        self._pinned: dict[int, tuple[np.ndarray, Any]] = {}

    def _run(self, module: Any, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                # pinned once per input array, as the server's buffers are per bucket; the array is kept with
                # its pinned copy, so that its id cannot pass to another array
                kept = self._pinned.get(id(batch))
                if kept is None or kept[0] is not batch:
                    kept = self._pinned[id(batch)] = (batch, x.pin_memory())
                x = kept[1].to(self.device, non_blocking=True)
            y = module(x).cpu()
        return y.numpy()

    def embed_images(self, frames: np.ndarray) -> np.ndarray:
        return self._run(self.image, frames)

    def embed_ids(self, ids: np.ndarray) -> np.ndarray:
        return self._run(self.text, ids)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def measure(
    model_dir: Path,
    device: str,
    image_batches: list[int],
    text_batches: list[int],
    callers: list[int],
    seconds: float,
    config: Path | None = None,
) -> dict[str, Any]:
    from moments_server.inference.embedder import trimmed_length
    from moments_server.inference.manifest import load_manifest
    from moments_server.inference.sessions import load_towers
    from moments_server.inference.tokenizer import TextTokenizer
    from tests.bench.embedder_alone import EmbedderAlone, preload_cuda
    from tests.bench.load import query_texts

    if device == "cuda":
        preload_cuda()
    m = load_manifest(model_dir)
    text, image = load_towers(m, device, 0)
    tt = TorchTowers(torch_model(m, config), m, device)
    size = m.image_size
    rng = np.random.default_rng(0)
    tok = TextTokenizer(m.tokenizer_path, m.context_length)
    texts = query_texts()
    max_text = max(text_batches)
    ids_all = tok([next(texts) for _ in range(max_text)])
    if m.text_trim:  # cut where the server cuts a batch of these queries (16 positions for short ones)
        ids_all = np.ascontiguousarray(ids_all[:, : trimmed_length(ids_all, m.context_length)])
    out: dict[str, Any] = {
        "device": device,
        "model": m.name,
        "onnx": {"provider": image.provider, "precision": image.precision, "fused": image.fused},
        "torch": {"version": tt.torch.__version__, "dtype": str(tt.dtype).removeprefix("torch.")},
        "text_length": int(ids_all.shape[1]),
    }
    # the same model on both sides: the embeddings agree (fp16 on CUDA: a looser agreement than fp32's)
    probe_frames = rng.integers(0, 256, (4, size, size, 3), dtype=np.uint8)
    out["agreement"] = {
        "image_min_cosine": round(_cos(image.run(probe_frames), tt.embed_images(probe_frames)), 5),
        "text_min_cosine": round(_cos(text.run(ids_all[:4]), tt.embed_ids(ids_all[:4])), 5),
    }
    if image.provider == "CUDAExecutionProvider":
        image.use_buckets(image_batches, (size, size, 3), m.embed_dim)
        text_sizes = sorted({1, *text_batches})  # batch 1: the lone caller's, below
        text.use_buckets(text_sizes, (m.context_length,), m.embed_dim, lengths=(int(ids_all.shape[1]),))
        for tower, sizes in ((image, image_batches), (text, text_sizes)):
            for b in sizes:  # as the server warms: captures the CUDA graph, or falls back to none (logged)
                tower.warm(b)
        out["onnx"]["cuda_graphs"] = {"image": image.cuda_graphs, "text": text.cuda_graphs}
    rows: list[dict[str, Any]] = []
    for tower, onnx_tower, torch_fn, batches in (
        ("image", image, tt.embed_images, image_batches),
        ("text", text, tt.embed_ids, text_batches),
    ):
        for b in batches:
            x = (
                rng.integers(0, 256, (b, size, size, 3), dtype=np.uint8)
                if tower == "image"
                else np.ascontiguousarray(ids_all[np.arange(b) % max_text])
            )
            rounds = []
            for _ in range(2):  # alternating blocks: the machine's drift falls on both sides
                o = _rate(partial(onnx_tower.embed, x), b, seconds / 2)
                t = _rate(partial(torch_fn, x), b, seconds / 2)
                rounds.append((o, t))
            onnx_rate = round(max(r[0] for r in rounds), 1)
            torch_rate = round(max(r[1] for r in rounds), 1)
            rows.append(
                {
                    "tower": tower,
                    "batch": b,
                    "onnx_per_s": onnx_rate,
                    "torch_per_s": torch_rate,
                    "ratio": round(onnx_rate / torch_rate, 3),
                }
            )
    out["towers"] = rows
    one = ids_all[:1]
    out["text_b1_p50_ms"] = round(_p50_ms(partial(text.embed, one), seconds), 3)
    out["torch_text_b1_p50_ms"] = round(_p50_ms(partial(tt.embed_ids, one), seconds), 3)
    best_text = max(float(r["onnx_per_s"]) for r in rows if r["tower"] == "text")
    # the Embedder below loads its own sessions, as the server does
    levels: list[dict[str, float]] = []
    with EmbedderAlone(model_dir, device=device) as alone:
        for c in callers:
            res = alone.measure(c, seconds, f"vs torch {c} ")
            p50 = float(np.percentile(res.latencies_s, 50) * 1e3)
            levels.append({"callers": c, "qps": round(res.qps, 1), "p50_ms": round(p50, 3)})
        out["embedder"] = {"provider": alone.provider, "text_max_batch": alone.text_max_batch, "levels": levels}
    out["embedder_best_vs_bare_text_best"] = round(max(lv["qps"] for lv in levels) / best_text, 3)
    first = levels[0]
    out["one_caller_p50_minus_b1_ms"] = (
        round(first["p50_ms"] - out["text_b1_p50_ms"], 3) if first["callers"] == 1 else None
    )
    return out


def _ints(s: str) -> list[int]:
    return [int(v) for v in s.split(",") if v]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.vs_torch", description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--model-config", type=Path, help="an OpenCLIP config JSON the model was exported from")
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--image-batches", type=_ints, default=[256, 1024])
    p.add_argument("--text-batches", type=_ints, default=[512])
    p.add_argument("--callers", type=_ints, default=[1, 16, 128, 1024])
    p.add_argument("--seconds", type=float, default=3.0, help="per measurement (each side gets half, twice)")
    p.add_argument("--out", type=Path, help="write the result JSON here too")
    a = p.parse_args(argv)
    res = measure(a.model_dir, a.device, a.image_batches, a.text_batches, a.callers, a.seconds, a.model_config)
    text = json.dumps(res, indent=1)
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
