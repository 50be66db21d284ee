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
  rows the index does not hold yet, from SQLite) and rank them exactly (cmd_descriptors._knn);
- deferred graph insertion (HNSW, `deferred=True`): a commit appends its vectors to the set's `Tail`
  and returns; searches rank the tail exactly and merge it with the graph's answer, and the engine's
  indexer thread moves the tail into the graph in chunks of `DRAIN_CHUNK` (a brief write lock each).
  A tail over `TAIL_MAX` makes the committing writer insert into the graph itself (back-pressure);
- whole rebuilds (deferred HNSW sets): frames arrive video by video, and a graph grown in that order
  is much worse than one built from the same vectors in shuffled order (recall@10 0.75 vs 0.94 at
  100k CLIP-like frames, make bench figure 5.100k.order). Once the vectors inserted one chunk at a
  time since the graph's last whole build are at least as many as it then held (and >= REBUILD_MIN),
  the indexer builds a new graph from every live vector in shuffled order, a chunk at a time in idle
  time, while the old one keeps serving, then swaps it in (`Rebuild`). Doubling keeps the total
  rebuild work under twice a single build; a rebuild holds a second graph in memory while it runs.
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

# Deferred HNSW insertion: searches scan the tail exactly (~2 KiB and ~0.1 us per 512-d vector), so its
# bound caps both memory and the extra search time (~2 ms at 20k); a drain chunk holds the index's write
# lock, and so searches, for ~60 us per vector on one core.
TAIL_MAX = 50_000
DRAIN_CHUNK = 128
REBUILD_MIN = 5_000
REBUILD_CHUNK = 256


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


class Tail:
    """Descriptors committed to SQLite that the HNSW graph does not hold yet, in id order.

    Searches rank them exactly beside the graph's answer, so a commit never waits for graph insertion
    (about half of a bulk insert's CPU time); the engine's indexer thread moves them into the graph in
    small chunks. A growable buffer with a moving front: appends and drains copy only what they move.
    """

    def __init__(self, dims: int) -> None:
        self.dims = dims
        self._ids = np.zeros(0, np.int64)
        self._vecs = np.zeros((0, dims), np.float32)
        self._lo = 0
        self._hi = 0

    def __len__(self) -> int:
        return self._hi - self._lo

    @property
    def ids(self) -> np.ndarray:
        return self._ids[self._lo : self._hi]

    @property
    def vecs(self) -> np.ndarray:
        return self._vecs[self._lo : self._hi]

    def append(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        n, live = len(ids), len(self)
        if self._hi + n > len(self._ids):
            cap = max(1024, len(self._ids))
            while cap < 2 * (live + n):
                cap *= 2
            new_ids = np.zeros(cap, np.int64)
            new_vecs = np.zeros((cap, self.dims), np.float32)
            new_ids[:live] = self.ids
            new_vecs[:live] = self.vecs
            self._ids, self._vecs, self._lo, self._hi = new_ids, new_vecs, 0, live
        self._ids[self._hi : self._hi + n] = ids
        self._vecs[self._hi : self._hi + n] = vecs
        self._hi += n
        if live and n and ids.min() <= self._ids[self._hi - n - 1]:  # keep id order (lookups bisect)
            order = np.argsort(self.ids, kind="stable")
            self._ids[self._lo : self._hi] = self.ids[order]
            self._vecs[self._lo : self._hi] = self.vecs[order]

    def front(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `n` (oldest) entries, as views: valid until the next change."""
        end = self._lo + min(n, len(self))
        return self._ids[self._lo : end], self._vecs[self._lo : end]

    def drop_front(self, n: int) -> None:
        self._lo += min(n, len(self))
        if self._lo == self._hi:
            self._lo = self._hi = 0

    def positions(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """-> (mask of `ids` held here, their positions in `self.ids` where held)."""
        mine = self.ids
        pos = np.searchsorted(mine, ids)
        pos_c = np.minimum(pos, max(len(mine) - 1, 0))
        held = (pos < len(mine)) & (mine[pos_c] == ids) if len(mine) else np.zeros(len(ids), bool)
        return held, pos_c[held]

    def remove(self, ids: np.ndarray) -> np.ndarray:
        """Drop the given ids held here; -> the ids that were not here."""
        if not len(self):
            return ids
        held, pos = self.positions(ids)
        if held.any():
            keep = np.ones(len(self), bool)
            keep[pos] = False
            kept_ids, kept_vecs = self.ids[keep], self.vecs[keep]
            self._ids = np.zeros(0, np.int64)
            self._vecs = np.zeros((0, self.dims), np.float32)
            self._lo = self._hi = 0
            self.append(kept_ids, kept_vecs)
        return ids[~held]


def _empty(nq: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)


def _exact(q: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top k of prepared vectors `xb` (row ids `ids`) for prepared queries `q`."""
    kk = min(k, len(ids))
    if kk == 0:
        return _empty(q.shape[0])
    d, pos = faiss.knn(q, xb, kk, metric=faiss_metric(metric))
    return d, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def _merge(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of two (distances, ids) answers per query; ids -1 (no hit) sort last."""
    if not b[1].shape[1]:
        return a
    if not a[1].shape[1]:
        return b
    d = np.concatenate([a[0], b[0]], axis=1)
    i = np.concatenate([a[1], b[1]], axis=1)
    key = np.where(i < 0, np.inf, d if metric == "L2" else -d)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def _in_tie_order(found: tuple[np.ndarray, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Best first, equal distances in insertion order (ids grow with insertion), as ApertureDB answers;
    faiss's inner-product heaps return ties in reverse. Ids -1 (no hit) last."""
    d, i = found
    if i.shape[1] < 2:
        return found
    key = np.where(i < 0, np.inf, d if metric == "L2" else -d)
    tiebreak = np.where(i < 0, np.iinfo(np.int64).max, i)
    order = np.lexsort((tiebreak, key), axis=1)
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


class VectorIndex:
    def __init__(
        self, dims: int, metric: str, engine: str, hnsw: HnswParams | None = None, deferred: bool = False
    ) -> None:
        self.dims = dims
        self.params = hnsw or HnswParams()
        self.metric = metric
        self.engine = engine
        self.hnsw = engine in HNSW_ENGINES
        self.deferred = deferred and self.hnsw
        self.tail = Tail(dims)
        self.on_tail: Any = None  # called (no arguments) after a deferred add: wakes the indexer
        self.index: Any = self._new_index()
        self.tombstones: set[int] = set()
        self.last_id = 0
        self.lock = RWLock()
        self.dirty = False
        self.built = 0  # live vectors in the graph at its last whole (shuffled) build
        self.added_since_build = 0  # vectors inserted chunk by chunk since then
        self._log_adds: list[np.ndarray] | None = None  # while a rebuild runs: ids inserted into the old graph
        self._log_dels: list[np.ndarray] | None = None  # ... and ids deleted from it
        self._id_map_cache: tuple[tuple[int, int], np.ndarray] | None = None
        self._version = 0  # bumped whenever the graph object or its positions change (under the write lock)

    @property
    def rebuild_due(self) -> bool:
        return self.deferred and self.added_since_build >= max(REBUILD_MIN, self.built)

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
        return int(self.index.ntotal) - len(self.tombstones) + len(self.tail)

    @property
    def pending(self) -> int:
        """Vectors committed but not in the graph yet (searched exactly meanwhile)."""
        return len(self.tail)

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        if not len(ids):
            return
        x = prepare(vecs, self.metric)
        ids64 = np.ascontiguousarray(ids, dtype=np.int64)
        limit_omp_threads()
        if self.deferred:
            with self.lock.write():
                self.tail.append(ids64, x)
                self.last_id = max(self.last_id, int(ids64.max()))
            while self.pending > TAIL_MAX:  # the indexer is behind: this writer helps
                self.drain(DRAIN_CHUNK)
            if self.on_tail is not None:
                self.on_tail()
            return
        with self.lock.write():
            self.index.add_with_ids(x, ids64)
            self.last_id = max(self.last_id, int(ids64.max()))
            self.dirty = True
            self._version += 1

    def drain(self, n: int) -> int:
        """Move up to `n` tail vectors into the graph; -> how many are still pending."""
        limit_omp_threads()
        with self.lock.write():
            ids, x = self.tail.front(n)
            if len(ids):
                self.index.add_with_ids(x, ids)
                if self._log_adds is not None:
                    self._log_adds.append(ids.copy())
                self.added_since_build += len(ids)
                self.tail.drop_front(len(ids))  # only now: `pending` counts what is not searchable in the graph
                self.dirty = True
                self._version += 1
            return len(self.tail)

    def remove(self, ids: np.ndarray) -> None:
        if not len(ids):
            return
        ids64 = np.ascontiguousarray(ids, dtype=np.int64)
        with self.lock.write():
            ids64 = self.tail.remove(ids64)
            if not len(ids64):
                return
            if self._log_dels is not None:
                self._log_dels.append(ids64.copy())
            if self.hnsw:
                self.tombstones.update(int(i) for i in ids64)
            else:
                self.index.remove_ids(faiss.IDSelectorBatch(ids64))
            self.dirty = True
            self._version += 1

    def search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Search prepared queries over the whole set; ids are -1 where fewer than k exist."""
        return _in_tie_order(self._search(q, k), self.metric)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        limit_omp_threads()
        with self.lock.read():
            if not len(self.tail):
                return self._search_graph(q, k)
            return _merge(
                self._search_graph(q, k), _exact(q, self.tail.vecs, self.tail.ids, k, self.metric), k, self.metric
            )

    def _search_graph(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.index.ntotal)
        if n == 0 or k <= 0:
            return _empty(q.shape[0])
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
        """Exact top k among `ids` (a large filtered candidate set).

        Flat: the index with an IDSelector. HNSW: not the graph: a filtered graph search loses most of
        the answer when the filter and the vectors are correlated (one camera, a set of videos): on
        100k CLIP-like frames, recall@10 0.62 / 0.36 / 0.19 for filters passing 60 / 30 / 10 % of the
        videos, efSearch 128. Instead the graph's own flat storage is scanned with the filter as a
        bitmap (exact; distances only for the ids that pass)."""
        return _in_tie_order(self._search_subset(q, k, ids), self.metric)

    def _search_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        limit_omp_threads()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self.lock.read():
            kk = min(k, len(ids))
            if not self.index.ntotal:
                found = _empty(q.shape[0])
            elif self.hnsw:
                found = self._scan_storage(q, kk, ids)
            else:
                sel = faiss.IDSelectorBatch(ids)
                found = self.index.search(q, kk, params=faiss.SearchParameters(sel=sel))  # type: ignore[call-arg]
            if not len(self.tail):
                return found
            _, pos = self.tail.positions(np.sort(ids))
            if not len(pos):
                return found
            return _merge(found, _exact(q, self.tail.vecs[pos], self.tail.ids[pos], kk, self.metric), kk, self.metric)

    def _scan_storage(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of `ids` over an HNSW graph's flat storage (positions translated to ids)."""
        graph: Any = faiss.downcast_index(self.index.index)
        storage = faiss.downcast_index(graph.storage)
        bits = np.zeros(int(ids.max()) + 1, dtype=bool)
        bits[ids] = True
        bitmap = np.packbits(bits, bitorder="little")
        inner = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        sel = faiss.IDSelectorTranslated(self.index.id_map, inner)
        d, pos = storage.search(q, k, params=faiss.SearchParameters(sel=sel))  # type: ignore[call-arg]
        id_map = self._id_map()
        return d, np.where(pos >= 0, id_map[np.maximum(pos, 0)], -1)

    def _id_map(self) -> np.ndarray:
        """Position -> id of the graph, cached while the graph is unchanged (callers hold the read lock)."""
        key = (self._version, int(self.index.ntotal))
        cached = self._id_map_cache
        if cached is None or cached[0] != key:
            cached = (key, faiss.vector_to_array(self.index.id_map).astype(np.int64))
            self._id_map_cache = cached
        return cached[1]

    def reconstruct(self, ids: np.ndarray) -> np.ndarray | None:
        """The prepared vectors of `ids` from memory; None when one of them is not in the index."""
        if not len(ids):
            return np.zeros((0, self.dims), np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self.lock.read():
            held, pos = self.tail.positions(ids)
            try:
                if not held.any():
                    return np.asarray(self.index.reconstruct_batch(ids))
                out = np.empty((len(ids), self.dims), np.float32)
                out[held] = self.tail.vecs[pos]
                if not held.all():
                    out[~held] = self.index.reconstruct_batch(np.ascontiguousarray(ids[~held]))
                return out
            except RuntimeError:
                return None

    def ids(self) -> np.ndarray:
        """Every id held: the graph's and the tail's."""
        with self.lock.read():
            graph = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            return np.concatenate([graph, self.tail.ids]) if len(self.tail) else graph

    # -- persistence -------------------------------------------------------------------------------

    def save(self, directory: Path, set_id: int) -> None:
        """Persist the index with the fingerprint (count, max id) of the rows it holds (the graph's: a
        tail is not saved; the next open finds those rows missing and catches them up from SQLite).

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
                "built": self.built,
                "added_since_build": self.added_since_build,
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
        cls,
        directory: Path,
        set_id: int,
        dims: int,
        metric: str,
        engine: str,
        hnsw: HnswParams | None = None,
        deferred: bool = False,
    ) -> tuple[VectorIndex, tuple[int, int] | None]:
        """-> (index, the (count, max id) fingerprint it was saved with, or None if nothing usable)."""
        vi = cls(dims, metric, engine, hnsw, deferred)
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


class Rebuild:
    """A whole rebuild of one set's graph (see the module doc): `step()` inserts the next chunk of the
    live vectors, in shuffled order, into a private new graph (reading them back from the old one under
    its read lock); `finish()` swaps it in under the write lock, after inserting what was drained into
    the old graph meanwhile and tombstoning what was deleted. `abort()` drops it."""

    def __init__(self, vi: VectorIndex, seed: int = 0) -> None:
        self.vi = vi
        with vi.lock.write():
            live = faiss.vector_to_array(vi.index.id_map).astype(np.int64)
            if vi.tombstones:
                live = np.setdiff1d(live, np.fromiter(vi.tombstones, np.int64), assume_unique=True)
            vi._log_adds, vi._log_dels = [], []
        self.order = np.random.default_rng(seed).permutation(live)
        self.pos = 0
        self.new = vi._new_index()

    @property
    def done(self) -> bool:
        return self.pos >= len(self.order)

    def step(self, n: int = REBUILD_CHUNK) -> bool:
        """Insert the next `n` vectors; -> True when every snapshot vector is in the new graph."""
        limit_omp_threads()
        ids = self.order[self.pos : self.pos + n]
        if len(ids):
            with self.vi.lock.read():
                x = self.vi.index.reconstruct_batch(ids)
            self.new.add_with_ids(x, ids)
            self.pos += len(ids)
        return self.done

    def finish(self) -> None:
        vi = self.vi
        limit_omp_threads()
        with vi.lock.write():
            added = np.concatenate(vi._log_adds) if vi._log_adds else np.zeros(0, np.int64)
            dels = np.concatenate(vi._log_dels) if vi._log_dels else np.zeros(0, np.int64)
            if len(added):
                self.new.add_with_ids(vi.index.reconstruct_batch(added), added)
            held = np.concatenate([self.order, added])
            dead = dels[np.isin(dels, held)]
            vi.index = self.new
            vi.tombstones = {int(i) for i in dead}
            vi.built = len(held) - len(vi.tombstones)
            vi.added_since_build = len(added)
            vi._log_adds = vi._log_dels = None
            vi.dirty = True
            vi._version += 1

    def abort(self) -> None:
        with self.vi.lock.write():
            self.vi._log_adds = self.vi._log_dels = None


def _fsync_file(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
