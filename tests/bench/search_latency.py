"""Figure 1: text search latency, one client, at the server store size (100k frames), end to end over gRPC,
against the bare ONNX text encode at batch 1 plus the bare FAISS search of the same index, measured in this
process in the same run. Goal: p50 ≤ bare encode + bare search + 3 ms."""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np

from tests.bench.common import Figure, Goal, log, percentile, summarize, time_calls
from tests.bench.load import query_texts, run_async, search_load

TOP_K = 10


@functools.lru_cache(maxsize=2)
def text_tower(model_dir: Path, threads: int) -> tuple[Any, Any]:
    """The text tower with the server's own session settings, and a tokenizer giving the ids the server sends."""
    from moments_server.inference.embedder import trimmed_length
    from moments_server.inference.manifest import load_manifest
    from moments_server.inference.sessions import load_towers
    from moments_server.inference.tokenizer import TextTokenizer

    m = load_manifest(model_dir)
    text, image = load_towers(m, "cpu", threads)
    del image
    full = TextTokenizer(m.tokenizer_path, m.context_length)
    if not m.text_trim:
        return text, full

    def tok(texts: list[str]) -> Any:  # the ids the Embedder sends: cut after the batch's longest text
        ids = full(texts)
        return ids[:, : trimmed_length(ids, m.context_length)]

    return text, tok


def bare_text(model_dir: Path, texts: list[str], threads: int) -> dict[str, Any]:
    """Tokenize and encode each text at batch 1."""
    text, tok = text_tower(model_dir, threads)
    ids = [tok([t]) for t in texts]
    for i in ids[:3]:
        text.run(i)
    enc, tk, vecs = [], [], []
    for t, i in zip(texts, ids, strict=True):
        s = time.perf_counter()
        tok([t])
        tk.append(time.perf_counter() - s)
        s = time.perf_counter()
        vecs.append(text.run(i)[0])
        enc.append(time.perf_counter() - s)
    return {"encode_s": enc, "tokenize_s": tk, "vectors": np.stack(vecs)}


def load_index(store_dir: Path) -> Any:
    """The store's persisted FAISS index of its (only) descriptor set, as the engine loads it."""
    import faiss

    from moments_server.store.embedded import vectors as V

    files = sorted((store_dir / "vectors").glob("*.faiss"))
    if not files:
        raise RuntimeError(f"{store_dir} holds no persisted vector index")
    index = faiss.read_index(str(files[0]))
    if hasattr(index, "index") and hasattr(faiss.downcast_index(index.index), "hnsw"):
        faiss.downcast_index(index.index).hnsw.efSearch = V.HNSW_EF_SEARCH
    return index


def bare_search(index: Any, q: np.ndarray, k: int = TOP_K) -> list[float]:
    """Each query alone, with FAISS's OpenMP threads set as the store sets them for its searches."""
    from moments_server.store.embedded.vectors import limit_omp_threads

    limit_omp_threads()
    x = np.ascontiguousarray(q, dtype=np.float32)
    out = []
    for i in range(len(x)):
        s = time.perf_counter()
        index.search(x[i : i + 1], k)
        out.append(time.perf_counter() - s)
    return out


def run(ctx: Any) -> list[Figure]:
    import os

    n = ctx.sizes["latency_queries"]
    size = ctx.sizes["server_store"]
    store_dir, store_facts = ctx.store(size)
    threads = os.cpu_count() or 1
    texts = [t for _, t in zip(range(n), query_texts("bare "), strict=False)]
    index = load_index(store_dir)
    ntotal = int(index.ntotal)
    server, _ = ctx.search_server()
    # Bare and end-to-end blocks alternate, so that both see the same machine (others share its CPUs).
    rounds = 3
    enc: list[float] = []
    tks: list[float] = []
    bs: list[float] = []
    from tests.bench.load import LoadResult

    res = LoadResult(1, 0.0)
    log(f"{rounds} rounds of bare text encode + bare FAISS search vs end-to-end search, {n} queries each")
    run_async(lambda: search_load(server.target, 1, count=5, texts=query_texts("warm ")))
    for r in range(rounds):
        part = texts[r::rounds]
        bt = bare_text(ctx.model(), part, threads)
        enc += bt["encode_s"]
        tks += bt["tokenize_s"]
        time_calls(lambda bt=bt, ix=index: ix.search(bt["vectors"][:1], TOP_K), 5, warmup=2)
        bs += bare_search(index, bt["vectors"])
        del bt
        got = run_async(
            lambda part=part, r=r: search_load(server.target, 1, count=len(part), texts=query_texts(f"lat{r} "))
        )
        res.latencies_s += got.latencies_s
        res.timings += got.timings
        res.errors.update(got.errors)
        res.wall_s += got.wall_s
    del index
    text_tower.cache_clear()
    bt = {"encode_s": enc, "tokenize_s": tks}
    enc_p50, srch_p50 = percentile(enc, 50) * 1e3, percentile(bs, 50) * 1e3
    ctx.shared["bare_text_b1_ms"] = enc_p50
    s = res.summary()
    p50 = s["latency_ms"]["p50"]
    base = enc_p50 + srch_p50
    st = s.get("server_timing_ms", {})
    parts = {
        "queue": st.get("queue", {}).get("p50", 0.0),
        "inference - bare encode": st.get("inference", {}).get("p50", 0.0) - enc_p50,
        "store - bare search": st.get("store", {}).get("p50", 0.0) - srch_p50,
        "server other (tokenize, batcher, moments)": st.get("total", {}).get("p50", 0.0)
        - st.get("queue", {}).get("p50", 0.0)
        - st.get("inference", {}).get("p50", 0.0)
        - st.get("store", {}).get("p50", 0.0),
        "gRPC + client (end to end - server total)": p50 - st.get("total", {}).get("p50", 0.0),
    }
    excess = p50 - base
    worst = max(parts, key=lambda k: parts[k])
    fig = Figure(
        "1",
        f"text search p50, 1 client, {ntotal:,} frames",
        p50,
        "ms",
        baseline="bare ONNX text encode b=1 + bare FAISS search (p50s)",
        baseline_value=round(base, 3),
        goal=Goal("p50 ≤ bare encode + bare search + 3 ms", "<=", round(base + 3.0, 3)),
        params={
            "queries": n,
            "clients": 1,
            "top_k": TOP_K,
            "store_frames": ntotal,
            "store": store_facts.get("spec"),
            "intra_op_threads": threads,
            "server_flags": "defaults (text_max_batch 32, max_delay_ms 2)",
        },
        details={
            "end_to_end": s,
            "bare_encode_ms": summarize(bt["encode_s"]),
            "bare_tokenize_ms": summarize(bt["tokenize_s"]),
            "bare_search_ms": summarize(bs),
            "excess_ms_by_stage_p50": {k: round(v, 3) for k, v in parts.items()},
            "p99_ms": s["latency_ms"]["p99"],
        },
    )
    fig.reason = (
        f"p50 {p50:.1f} ms = bare {base:.1f} ms {excess:+.1f} ms; largest excess (p50s): {worst} "
        f"{parts[worst]:.1f} ms; p99 {s['latency_ms']['p99']:.1f} ms"
    )
    return [fig]
