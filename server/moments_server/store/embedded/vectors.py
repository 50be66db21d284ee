"""One FAISS index per descriptor set: a cache of the vectors SQLite holds.

- ids are the descriptors' row ids (`IndexIDMap2`), so a hit maps straight back to SQLite and a
  filtered search can read its candidates' vectors back from memory by id;
- metric `L2` -> `IndexFlatL2`/HNSW-L2 (FAISS reports the squared distance, as ApertureDB does),
  `IP` -> inner product, `CS` -> inner product on L2-normalised vectors (cosine similarity);
- deletes: `remove_ids` for Flat; HNSW cannot remove, so deleted ids become tombstones that searches
  exclude with an `IDSelector`;
- persistence: `<dir>/<set_id>.faiss` plus `<set_id>.json` with the (count, max id) fingerprint of
  the rows it holds (see `save`). On open the engine uses it as is when SQLite has the same
  fingerprint; otherwise it adds the rows the index lacks and drops (or tombstones) the ids SQLite no
  longer has, so the cache never disagrees with SQLite after a crash;
- filtered searches that select few candidates take those vectors from the index by id (or, for
  rows the index does not hold yet, from SQLite) and rank them exactly (cmd_descriptors._knn).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .rwlock import RWLock

HNSW_M = 32
HNSW_EF_CONSTRUCTION = 128
HNSW_EF_SEARCH = 128


@dataclass(frozen=True)
class HnswParams:
    """HNSW parameters of a set, from its properties `hnsw_m`, `hnsw_ef_construction`, `hnsw_ef_search`.

    ApertureDB documents no names for these; the embedded store reads them from the set's properties
    so that a caller can trade recall for speed per set (a real server keeps them as plain properties).
    """

    m: int = HNSW_M
    ef_construction: int = HNSW_EF_CONSTRUCTION
    ef_search: int = HNSW_EF_SEARCH

    @classmethod
    def from_properties(cls, props: dict[str, Any]) -> HnswParams:
        values: dict[str, int] = {}
        for key, field, low, high in (
            ("hnsw_m", "m", 4, 256),
            ("hnsw_ef_construction", "ef_construction", 8, 4096),
            ("hnsw_ef_search", "ef_search", 1, 65536),
        ):
            v = props.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, int | float) or int(v) != v or not low <= v <= high:
                raise ValueError(f"property {key!r} must be an integer in [{low}, {high}], not {v!r}")
            values[field] = int(v)
        return cls(**values)


FLAT_ENGINES = {"Flat", "FaissFlat"}
HNSW_ENGINES = {"HNSW", "FaissHNSWFlat"}
METRICS = {"L2", "IP", "CS"}


# FAISS's OpenMP threads spin-wait; on a small, busy machine one search with 2 threads measured 5-10x
# slower than with 1, and parallelism comes from concurrent queries anyway. OpenMP's thread count is
# per calling thread, so each thread that searches sets it once (None: leave FAISS's default).
OMP_THREADS: int | None = 1
_omp_local = threading.local()


def limit_omp_threads() -> None:
    if OMP_THREADS is not None and getattr(_omp_local, "n", None) != OMP_THREADS:
        faiss.omp_set_num_threads(OMP_THREADS)
        _omp_local.n = OMP_THREADS


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "L2" else faiss.METRIC_INNER_PRODUCT


def prepare(vecs: np.ndarray, metric: str) -> np.ndarray:
    """float32, C-contiguous, normalised for CS (zero vectors stay zero)."""
    x = np.ascontiguousarray(vecs, dtype=np.float32)
    if metric == "CS":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


class VectorIndex:
    def __init__(self, dims: int, metric: str, engine: str, hnsw: HnswParams | None = None) -> None:
        self.dims = dims
        self.params = hnsw or HnswParams()
        self.metric = metric
        self.engine = engine
        self.hnsw = engine in HNSW_ENGINES
        self.index: Any = self._new_index()
        self.tombstones: set[int] = set()
        self.last_id = 0
        self.lock = RWLock()
        self.dirty = False

    def _new_index(self) -> Any:
        base: Any
        if self.hnsw:
            base = faiss.IndexHNSWFlat(self.dims, self.params.m, faiss_metric(self.metric))
            base.hnsw.efConstruction = self.params.ef_construction
            base.hnsw.efSearch = self.params.ef_search
        elif self.metric == "L2":
            base = faiss.IndexFlatL2(self.dims)
        else:
            base = faiss.IndexFlatIP(self.dims)
        return faiss.IndexIDMap2(base)  # IDMap2: vectors can be read back by id (filtered search)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal) - len(self.tombstones)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids):
            return
        x = prepare(vecs, self.metric)
        ids64 = np.ascontiguousarray(ids, dtype=np.int64)
        limit_omp_threads()
        with self.lock.write():
            self.index.add_with_ids(x, ids64)
            self.last_id = max(self.last_id, int(ids64.max()))
            self.dirty = True

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        ids64 = np.ascontiguousarray(ids, dtype=np.int64)
        with self.lock.write():
            if self.hnsw:
                self.tombstones.update(int(i) for i in ids64)
            else:
                self.index.remove_ids(faiss.IDSelectorBatch(ids64))
            self.dirty = True

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search prepared queries over the whole set; ids are -1 where fewer than k exist."""
        limit_omp_threads()
        with self.lock.read():
            n = int(self.index.ntotal)
            if n == 0 or k <= 0:
                return np.zeros((q.shape[0], 0), np.float32), np.zeros((q.shape[0], 0), np.int64)
            kk = min(k, n)
            if self.tombstones:
                sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(np.fromiter(self.tombstones, np.int64)))
                params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                    sel=sel, efSearch=max(self.params.ef_search, kk)
                )
                return self.index.search(q, kk, params=params)
            if self.hnsw and kk > self.params.ef_search:
                params = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                    efSearch=kk
                )
                return self.index.search(q, kk, params=params)
            return self.index.search(q, kk)

    def search_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Search only `ids` (a large filtered candidate set) in the index."""
        limit_omp_threads()
        sel = faiss.IDSelectorBatch(np.ascontiguousarray(ids, dtype=np.int64))
        with self.lock.read():
            kk = min(k, len(ids))
            if self.hnsw:
                params: Any = faiss.SearchParametersHNSW(  # type: ignore[attr-defined]
                    sel=sel, efSearch=max(self.params.ef_search, kk)
                )
            else:
                params = faiss.SearchParameters(sel=sel)  # type: ignore[call-arg]
            return self.index.search(q, kk, params=params)

    def reconstruct(self, ids: np.ndarray) -> np.ndarray | None:
        """The prepared vectors of `ids` from memory; None when one of them is not in the index."""
        if not len(ids):
            return np.zeros((0, self.dims), np.float32)
        with self.lock.read():
            try:
                return np.asarray(self.index.reconstruct_batch(np.ascontiguousarray(ids, dtype=np.int64)))
            except RuntimeError:
                return None

    def ids(self) -> np.ndarray:
        with self.lock.read():
            return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    # -- persistence -------------------------------------------------------------------------------

    def save(self, directory: Path, set_id: int) -> None:
        """Persist the index with the fingerprint (count, max id) of the rows it holds.

        Ids are never reused (the engine keeps a high-water mark), so an unchanged fingerprint in
        SQLite means an unchanged set of rows: adding moves the max up, and getting the max back
        down means deleting what was added. The metadata is removed before the index file is
        replaced and written after, so a crash in between leaves no metadata: a full rebuild."""
        directory.mkdir(parents=True, exist_ok=True)
        idx_path = directory / f"{set_id}.faiss"
        meta_path = directory / f"{set_id}.json"
        with self.lock.read():
            tmp = idx_path.with_suffix(".faiss.tmp")
            faiss.write_index(self.index, str(tmp))
            live = faiss.vector_to_array(self.index.id_map)
            if self.tombstones:
                live = np.setdiff1d(live, np.fromiter(self.tombstones, np.int64))
            meta = {
                "count": len(live),
                "max_id": int(live.max()) if len(live) else 0,
                "last_id": self.last_id,
                "dims": self.dims,
                "metric": self.metric,
                "engine": self.engine,
                "tombstones": sorted(self.tombstones),
            }
            self.dirty = False
        _fsync_file(tmp)
        meta_path.unlink(missing_ok=True)
        os.replace(tmp, idx_path)
        mtmp = meta_path.with_suffix(".json.tmp")
        mtmp.write_text(json.dumps(meta))
        _fsync_file(mtmp)
        os.replace(mtmp, meta_path)

    @classmethod
    def load(
        cls, directory: Path, set_id: int, dims: int, metric: str, engine: str, hnsw: HnswParams | None = None
    ) -> tuple[VectorIndex, tuple[int, int] | None]:
        """-> (index, the (count, max id) fingerprint it was saved with, or None if nothing usable)."""
        vi = cls(dims, metric, engine, hnsw)
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
        return vi, fingerprint


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
