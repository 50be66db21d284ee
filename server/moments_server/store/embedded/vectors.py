"""One FAISS index per descriptor set: a cache of the vectors SQLite holds.

- ids are the descriptors' row ids (`IndexIDMap2`), so a hit maps straight back to SQLite and a
  filtered search can read its candidates' vectors back from memory by id;
- metric `L2` -> `IndexFlatL2`/HNSW-L2 (FAISS reports the squared distance, as ApertureDB does),
  `IP` -> inner product, `CS` -> inner product on L2-normalised vectors (cosine similarity);
- deletes: `remove_ids` for Flat; HNSW cannot remove, so deleted ids become tombstones that searches
  exclude with an `IDSelector`;
- persistence: index_files.py;
- filtered searches that select few candidates take those vectors from the index by id (or, for
  rows the index does not hold yet, from SQLite) and rank them exactly (knn.py);
- deferred graph insertion (HNSW, `deferred=True`): a commit appends its vectors to the set's `Tail`
  and returns; searches rank the tail exactly and merge it with the graph's answer, and the engine's
  indexer thread moves the tail into the graph in chunks of `DRAIN_CHUNK` (a brief write lock each).
  A tail over `TAIL_MAX` makes the committing writer insert into the graph itself (back-pressure);
- whole rebuilds of graphs grown in a bad order: rebuild.py.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from .. import defaults
from .rwlock import RWLock
from .tail import Tail
from .topk import exact_top_k, faiss_metric, in_tie_order, merge_top_k, no_hits

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


# FAISS's threads per search (the Engine sets it; why 1 by default: defaults.OMP_THREADS). OpenMP's thread
# count is per calling thread, so each thread that searches sets it once (None: leave FAISS's default).
OMP_THREADS: int | None = defaults.OMP_THREADS
_omp_local = threading.local()


def limit_omp_threads() -> None:
    if OMP_THREADS is not None and getattr(_omp_local, "n", None) != OMP_THREADS:
        faiss.omp_set_num_threads(OMP_THREADS)
        _omp_local.n = OMP_THREADS


def prepare(vecs: np.ndarray, metric: str) -> np.ndarray:
    """float32, C-contiguous, normalised for CS (zero vectors stay zero)."""
    x = np.ascontiguousarray(vecs, dtype=np.float32)
    if metric == "CS":
        x = x.copy()
        faiss.normalize_L2(x)
    return x


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
        self.index: Any = self.empty_graph()
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

    def empty_graph(self) -> Any:
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
        return in_tie_order(self._search(q, k), self.metric)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        limit_omp_threads()
        with self.lock.read():
            if not len(self.tail):
                return self._search_graph(q, k)
            return merge_top_k(
                self._search_graph(q, k), exact_top_k(q, self.tail.vecs, self.tail.ids, k, self.metric), k, self.metric
            )

    def _search_graph(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.index.ntotal)
        if n == 0 or k <= 0:
            return no_hits(q.shape[0])
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
        return in_tie_order(self._search_subset(q, k, ids), self.metric)

    def _search_subset(self, q: np.ndarray, k: int, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        limit_omp_threads()
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        with self.lock.read():
            kk = min(k, len(ids))
            if not self.index.ntotal:
                found = no_hits(q.shape[0])
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
            return merge_top_k(
                found, exact_top_k(q, self.tail.vecs[pos], self.tail.ids[pos], kk, self.metric), kk, self.metric
            )

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

    # -- whole rebuilds (rebuild.py) ----------------------------------------------------------------

    def start_change_log(self) -> np.ndarray:
        """-> the graph's live ids; from now on the ids drained into it and deleted from it are logged."""
        with self.lock.write():
            live = faiss.vector_to_array(self.index.id_map).astype(np.int64)
            if self.tombstones:
                live = np.setdiff1d(live, np.fromiter(self.tombstones, np.int64), assume_unique=True)
            self._log_adds, self._log_dels = [], []
        return live

    def stop_change_log(self) -> None:
        with self.lock.write():
            self._log_adds = self._log_dels = None

    def read_back(self, ids: np.ndarray) -> np.ndarray:
        """The prepared vectors of `ids`, all in the graph."""
        with self.lock.read():
            return np.asarray(self.index.reconstruct_batch(ids))

    def swap_graph(self, new: Any, held: np.ndarray) -> None:
        """Serve from `new`, a graph holding the ids `held` (start_change_log's, in any order): first the
        vectors drained into the old graph since then are inserted into it, and what was deleted meanwhile
        becomes its tombstones."""
        limit_omp_threads()
        with self.lock.write():
            added = np.concatenate(self._log_adds) if self._log_adds else np.zeros(0, np.int64)
            dels = np.concatenate(self._log_dels) if self._log_dels else np.zeros(0, np.int64)
            if len(added):
                new.add_with_ids(self.index.reconstruct_batch(added), added)
            held = np.concatenate([held, added])
            dead = dels[np.isin(dels, held)]
            self.index = new
            self.tombstones = {int(i) for i in dead}
            self.built = len(held) - len(self.tombstones)
            self.added_since_build = len(added)
            self._log_adds = self._log_dels = None
            self.dirty = True
            self._version += 1
