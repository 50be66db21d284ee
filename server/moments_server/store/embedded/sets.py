"""The descriptor sets in memory: each set's record and FAISS index, loaded from SQLite and kept equal
to it (catch-up at open, the committed changes of each write transaction after its COMMIT)."""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .index_files import load_index, save_index
from .vectors import HnswParams, VectorIndex

log = logging.getLogger(__name__)

CATCH_UP_CHUNK = 50_000  # vectors read back from SQLite and added at a time


@dataclass
class SetInfo:
    id: int
    name: str
    dims: int
    metric: str
    metrics: list[str]
    engines: list[str]
    index: VectorIndex


def add_vectors(vi: VectorIndex, ids: list[int], vecs: list[bytes]) -> None:
    """Add float32 vectors as stored in SQLite (`vec` blobs) to an index."""
    if not ids:
        return
    x = np.frombuffer(b"".join(vecs), dtype="<f4").reshape(len(ids), vi.dims)
    vi.add(np.asarray(ids, dtype=np.int64), x)


class SetRegistry:
    """The sets by name and by id. `deferred`: HNSW sets insert into their graph in the background
    (`on_tail` wakes the indexer); `save_caught_up`: persist an index that catching up changed (the
    owner does; a replica never writes a file)."""

    def __init__(self, vec_dir: Path, deferred: bool, on_tail: Callable[[], None], save_caught_up: bool) -> None:
        self.vec_dir = vec_dir
        self.deferred = deferred
        self.on_tail = on_tail
        self.save_caught_up = save_caught_up
        self.by_name: dict[str, SetInfo] = {}
        self.by_id: dict[int, SetInfo] = {}

    def all(self) -> list[SetInfo]:
        return list(self.by_name.values())

    def new_index(self, dims: int, metric: str, engine: str, hnsw: HnswParams | None) -> VectorIndex:
        vi = VectorIndex(dims, metric, engine, hnsw, self.deferred)
        vi.on_tail = self.on_tail
        return vi

    # -- from SQLite --------------------------------------------------------------------------------

    def load(self, conn: sqlite3.Connection) -> set[int]:
        """The descriptor sets as `conn` sees them: new ones loaded (their saved index caught up with
        SQLite), dropped ones forgotten; -> the ids of the new ones."""
        rows = conn.execute("SELECT id, props FROM objects WHERE cls='_DescriptorSet'").fetchall()
        new: set[int] = set()
        for gone in set(self.by_id) - {r[0] for r in rows}:
            self.by_name.pop(self.by_id.pop(gone).name, None)
        for set_id, props_json in rows:
            if set_id in self.by_id:
                continue
            p = json.loads(props_json)
            metric, engine = p["_metrics"][0], p["_engines"][0]
            hnsw = HnswParams.from_properties(p)
            vi, fingerprint = load_index(self.vec_dir, set_id, p["_dimensions"], metric, engine, hnsw, self.deferred)
            vi.on_tail = self.on_tail
            self.catch_up(conn, set_id, vi, fingerprint)
            info = SetInfo(set_id, p["_name"], p["_dimensions"], metric, p["_metrics"], p["_engines"], vi)
            self.by_name[info.name] = info
            self.by_id[set_id] = info
            new.add(set_id)
        return new

    def catch_up(
        self, conn: sqlite3.Connection, set_id: int, vi: VectorIndex, fingerprint: tuple[int, int] | None
    ) -> None:
        """Make `vi` hold exactly the vectors of `set_id` that `conn` sees (fingerprint: the saved index's,
        None to compare every id)."""
        n, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM vectors WHERE set_id=?", (set_id,)).fetchone()
        if fingerprint == (n, top) and vi.ntotal == n:
            return  # unchanged since it was saved (see index_files.save_index)
        cur = conn.execute("SELECT id FROM vectors WHERE set_id=? ORDER BY id", (set_id,))
        db_ids = np.fromiter((r[0] for r in cur), dtype=np.int64)
        idx_ids = np.sort(vi.ids())
        to_add = np.setdiff1d(db_ids, idx_ids, assume_unique=True)
        to_drop = np.setdiff1d(idx_ids, db_ids, assume_unique=True)
        if vi.tombstones:
            to_drop = np.setdiff1d(to_drop, np.fromiter(vi.tombstones, np.int64))
        if len(to_drop):
            vi.remove(to_drop)
        if len(to_add):
            lo = int(to_add[0])
            want = set(to_add.tolist())
            ids: list[int] = []
            vecs: list[bytes] = []
            cur = conn.execute("SELECT id, vec FROM vectors WHERE set_id=? AND id>=? ORDER BY id", (set_id, lo))
            while True:
                chunk = cur.fetchmany(CATCH_UP_CHUNK)
                if not chunk:
                    break
                for i, v in chunk:
                    if i in want:
                        ids.append(i)
                        vecs.append(v)
                if len(ids) >= CATCH_UP_CHUNK:
                    add_vectors(vi, ids, vecs)
                    ids, vecs = [], []
            add_vectors(vi, ids, vecs)
        if len(to_add) or len(to_drop):
            log.info("vector index %d caught up: +%d -%d", set_id, len(to_add), len(to_drop))
            if self.save_caught_up:
                save_index(vi, self.vec_dir, set_id)

    def catch_up_all(self, conn: sqlite3.Connection) -> None:
        for s in self.all():
            self.catch_up(conn, s.id, s.index, None)

    def remove_stale_files(self) -> None:
        """Index files of sets that no longer exist."""
        if not self.vec_dir.exists():
            return
        live = {str(i) for i in self.by_id}
        for f in self.vec_dir.iterdir():
            if f.name.split(".")[0] not in live:
                f.unlink(missing_ok=True)

    # -- committed changes --------------------------------------------------------------------------

    def drop(self, names: Iterable[str]) -> None:
        for name in names:
            s = self.by_name.pop(name, None)
            if s is not None:
                self.by_id.pop(s.id, None)
                for suffix in (".faiss", ".json"):
                    (self.vec_dir / f"{s.id}{suffix}").unlink(missing_ok=True)

    def register(self, sets: Iterable[SetInfo]) -> None:
        for s in sets:
            self.by_name[s.name] = s
            self.by_id[s.id] = s

    def add(self, set_id: int, ids: list[int], vecs: list[bytes]) -> None:
        s = self.by_id.get(set_id)
        if s is not None:
            add_vectors(s.index, ids, vecs)

    def remove(self, set_id: int, ids: list[int]) -> None:
        s = self.by_id.get(set_id)
        if s is not None:
            s.index.remove(np.asarray(ids, dtype=np.int64))

    # -- persistence --------------------------------------------------------------------------------

    def save_dirty(self) -> None:
        for s in self.all():
            if s.index.dirty:
                save_index(s.index, self.vec_dir, s.id)

    def drain_all(self) -> None:
        """Insert every tail into its graph (close: at most TAIL_MAX vectors per set)."""
        for s in self.all():
            while s.index.drain(4096):
                pass
