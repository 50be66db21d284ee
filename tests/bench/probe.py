"""One store, measured in a fresh process (so that its RSS and open time are the store's own):

    python -m tests.bench.probe IN.json OUT.json

IN: {"data_dir", "set", "queries": path of a .npy (n, dim) float32, "filtered": [{"name", "constraints"}...],
"filtered_queries": how many of the queries to run per filter, "k"}. OUT: open time, RSS, and for each
query kind the latencies and the returned (video_id, frame_s) of every hit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _hits(resp: Any) -> list[list[Any]]:
    ents = resp[0]["FindDescriptor"].get("entities") or []
    return [[e["video_id"], e["frame_s"], e["_distance"]] for e in ents]


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    os.environ.setdefault("ADB_LOG_FILE", "")
    rss_start = _rss()
    from moments_server.catalog import queries
    from moments_server.store.embedded import Engine

    rss_imported = _rss()
    t = time.perf_counter()
    engine = Engine(spec["data_dir"])
    open_s = time.perf_counter() - t
    rss_open = _rss()
    q = np.load(spec["queries"]).astype("<f4")
    k = int(spec.get("k", 10))
    name = spec["set"]
    out: dict[str, Any] = {
        "open_s": round(open_s, 4),
        "rss_mib": {"start": rss_start, "imported": rss_imported, "opened": rss_open},
    }

    def timed(cmds: list[dict[str, Any]], vec: np.ndarray) -> tuple[float, Any]:
        s = time.perf_counter()
        resp, _ = engine.query(cmds, [vec.tobytes()])
        el = time.perf_counter() - s
        if not isinstance(resp, list):
            raise RuntimeError(f"query failed: {resp}")
        return el, resp

    search = queries.search(name, k, None, False)
    find_only = [search[0]]
    for v in q[:5]:
        timed(search, v)
    lat, hits, lat_find = [], [], []
    for v in q:
        el, resp = timed(search, v)
        lat.append(el)
        hits.append(_hits(resp))
        el, _ = timed(find_only, v)
        lat_find.append(el)
    out["search"] = {
        "latency_s": lat,
        "hits": hits,
        "profile": _profile(lambda: [timed(search, v) for v in q[: min(len(q), 50)]]),
    }
    out["find_descriptor_only"] = {"latency_s": lat_find}

    s = engine.sets.by_name[name]
    index = s.index.index
    qs = np.ascontiguousarray(q, dtype=np.float32)
    for i in range(min(5, len(qs))):
        index.search(qs[i : i + 1], k)
    bare = []
    for i in range(len(qs)):
        t = time.perf_counter()
        index.search(qs[i : i + 1], k)
        bare.append(time.perf_counter() - t)
    out["bare_faiss"] = {
        "latency_s": bare,
        "ntotal": int(index.ntotal),
        "k": k,
        "index": type(index).__name__,
        "efSearch": _ef(index),
    }

    # the same index at other efSearch values: what recall and time each would give
    sweep = {}
    try:
        import faiss

        hnsw = faiss.downcast_index(index.index).hnsw
        ef0 = hnsw.efSearch
        for ef in (64, 128, 256, 512):
            hnsw.efSearch = ef
            ts, ids = [], []
            for i in range(len(qs)):
                t = time.perf_counter()
                _, lab = index.search(qs[i : i + 1], k)
                ts.append(time.perf_counter() - t)
                ids.append(lab[0].tolist())
            sweep[ef] = {"latency_s": ts, "ids": ids}
        hnsw.efSearch = ef0
    except Exception as e:  # a Flat index has no efSearch
        sweep = {"error": str(e)}
    out["ef_sweep"] = sweep
    # FAISS ids are the store's row ids; map them to (video_id, frame_s) for recall
    all_ids = sorted(
        {i for v in sweep.values() if isinstance(v, dict) and "ids" in v for r in v["ids"] for i in r if i >= 0}
    )
    rows = {}
    if all_ids:
        conn = engine._reader()
        for rid, vid, fs in conn.execute(
            "SELECT id, json_extract(props, '$.video_id'), json_extract(props, '$.frame_s') FROM objects "
            "WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(all_ids),),
        ):
            rows[rid] = [vid, fs]
    out["row_keys"] = {str(k): v for k, v in rows.items()}

    out["filtered"] = {}
    nf = int(spec.get("filtered_queries", 10))
    for flt in spec.get("filtered", []):
        cmds = queries.search(name, k, flt["constraints"], False)
        timed(cmds, q[0])
        fl, fh = [], []
        for v in q[:nf]:
            el, resp = timed(cmds, v)
            fl.append(el)
            fh.append(_hits(resp))
        out["filtered"][flt["name"]] = {
            "latency_s": fl,
            "hits": fh,
            "constraints": flt["constraints"],
            "profile": _profile(lambda cmds=cmds: [timed(cmds, v) for v in q[:nf]]),
        }
    out["rss_mib"]["after_searches"] = _rss()
    out["count"] = int(s.index.ntotal)
    t = time.perf_counter()
    engine.close()
    out["close_s"] = round(time.perf_counter() - t, 4)
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


def _profile(fn: Any, top: int = 8) -> list[list[Any]]:
    """cProfile of fn(): the `top` functions by own time, as [function, own share, cumulative share]."""
    import cProfile
    import pstats

    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values()) or 1.0  # type: ignore[attr-defined]
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:top]  # type: ignore[attr-defined]
    return [[f"{Path(k[0]).name}:{k[1]}({k[2]})", round(v[2] / total, 3), round(v[3] / total, 3)] for k, v in rows]


def _ef(index: Any) -> int | None:
    import faiss

    try:
        return int(faiss.downcast_index(index.index).hnsw.efSearch)
    except Exception:
        return None


if __name__ == "__main__":
    main()
