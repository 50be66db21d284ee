"""A set's FAISS index on disk: `<dir>/<set_id>.faiss` plus `<set_id>.json` with the (count, max id)
fingerprint of the rows it holds. On open the engine uses it as is when SQLite has the same fingerprint;
otherwise it adds the rows the index lacks and drops (or tombstones) the ids SQLite no longer has
(sets.SetRegistry.catch_up), so the cache never disagrees with SQLite after a crash."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .vectors import HnswParams, VectorIndex


def save_index(vi: VectorIndex, directory: Path, set_id: int) -> None:
    """Persist the index with the fingerprint (count, max id) of the rows it holds (the graph's: a
    tail is not saved; the next open finds those rows missing and catches them up from SQLite).

    Ids are never reused (the engine keeps a high-water mark), so an unchanged fingerprint in
    SQLite means an unchanged set of rows: adding moves the max up, and getting the max back
    down means deleting what was added. The metadata is removed before the index file is
    replaced and written after, so a crash in between leaves no metadata: a full rebuild."""
    directory.mkdir(parents=True, exist_ok=True)
    idx_path = directory / f"{set_id}.faiss"
    meta_path = directory / f"{set_id}.json"
    with vi.lock.read():
        tmp = idx_path.with_suffix(".faiss.tmp")
        faiss.write_index(vi.index, str(tmp))
        live = faiss.vector_to_array(vi.index.id_map)
        if vi.tombstones:
            live = np.setdiff1d(live, np.fromiter(vi.tombstones, np.int64))
        meta = {
            "count": len(live),
            "max_id": int(live.max()) if len(live) else 0,
            "last_id": vi.last_id,
            "dims": vi.dims,
            "metric": vi.metric,
            "engine": vi.engine,
            "tombstones": sorted(vi.tombstones),
            "built": vi.built,
            "added_since_build": vi.added_since_build,
        }
        vi.dirty = False
    _fsync_file(tmp)
    meta_path.unlink(missing_ok=True)
    os.replace(tmp, idx_path)
    mtmp = meta_path.with_suffix(".json.tmp")
    mtmp.write_text(json.dumps(meta))
    _fsync_file(mtmp)
    os.replace(mtmp, meta_path)


def load_index(
    directory: Path,
    set_id: int,
    dims: int,
    metric: str,
    engine: str,
    hnsw: HnswParams | None = None,
    deferred: bool = False,
) -> tuple[VectorIndex, tuple[int, int] | None]:
    """-> (index, the (count, max id) fingerprint it was saved with, or None if nothing usable)."""
    vi = VectorIndex(dims, metric, engine, hnsw, deferred)
    idx_path = directory / f"{set_id}.faiss"
    meta_path = directory / f"{set_id}.json"
    try:
        meta = json.loads(meta_path.read_text())
        if (meta["dims"], meta["metric"], meta["engine"]) != (dims, metric, engine):
            return vi, None
        index: Any = faiss.read_index(str(idx_path))
        if index.d != dims or not isinstance(index, faiss.IndexIDMap2):
            return vi, None
        fingerprint = (int(meta["count"]), int(meta["max_id"]))
    except (OSError, ValueError, KeyError, RuntimeError):
        return vi, None
    vi.index = index
    if vi.hnsw:
        faiss.downcast_index(index.index).hnsw.efSearch = vi.params.ef_search  # type: ignore[attr-defined]
    vi.last_id = int(meta["last_id"])
    vi.tombstones = set(meta.get("tombstones", []))
    # an index saved before rebuilds existed counts as grown chunk by chunk: it is rebuilt once
    vi.built = int(meta.get("built", 0))
    vi.added_since_build = int(meta.get("added_since_build", index.ntotal))
    return vi, fingerprint


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
