"""Read replicas of an embedded store in other processes, and the change log that they follow.

Several server processes on one host (the `--workers` launcher) each answer searches from their own
`Engine(data_dir, replica=True)`: SQLite in WAL mode lets any number of processes read while one
writes, and each replica keeps its own FAISS copy and read cache. Writes go to the one owner Engine
(over ApertureDB's wire protocol), which appends to `changes` in the same transaction what a copy
cannot see for itself:

    kind 0 (TOUCHED)  an existing object whose row or connections changed (or that was deleted)
    kind 2 (REMOVED)  a vector removed from set `set_id`
    kind 3 (SETS)     descriptor sets were created or dropped

New vectors need no entry: ids only grow, so a replica adds the vectors with an id above the highest it
has seen. Every read transaction of a replica first applies the log up to its own SQLite snapshot
(`follow`), and uses the log's sequence number as its read-cache generation (readcache.py): what it
reads is never older than what its snapshot holds.
"""

from __future__ import annotations

import sqlite3
import threading

from .readcache import ReadCache
from .sets import SetRegistry

TOUCHED, REMOVED, SETS = 0, 2, 3
KEEP = 200_000  # log entries kept; a replica further behind reloads what it follows
_PRUNE_EVERY = 1000  # writes


def log_changes(
    conn: sqlite3.Connection, touched: set[int], removed_vectors: dict[int, list[int]], sets_changed: bool
) -> None:
    """In the writer's transaction, before its COMMIT: the objects it touched, the vectors it removed (by
    set id), whether it created or dropped sets."""
    rows: list[tuple[int, int, int | None]] = [(TOUCHED, i, None) for i in touched]
    for set_id, ids in removed_vectors.items():
        rows.extend((REMOVED, i, set_id) for i in ids)
    if sets_changed:
        rows.append((SETS, 0, None))
    if rows:
        conn.executemany("INSERT INTO changes(kind, id, set_id) VALUES (?,?,?)", rows)
        top = conn.execute("SELECT max(seq) FROM changes").fetchone()[0]
        if top // _PRUNE_EVERY != (top - len(rows)) // _PRUNE_EVERY:
            conn.execute("DELETE FROM changes WHERE seq <= ?", (top - KEEP,))


def _heads(conn: sqlite3.Connection) -> tuple[int, int]:
    row = conn.execute(
        "SELECT (SELECT coalesce(max(seq), 0) FROM changes), (SELECT coalesce(max(id), 0) FROM vectors)"
    ).fetchone()
    return int(row[0]), int(row[1])


class ReplicaSync:
    """A replica Engine's view of the owner's changes: `sets` and `cache` are the replica's own."""

    def __init__(self, conn: sqlite3.Connection, sets: SetRegistry, cache: ReadCache) -> None:
        self.sets = sets
        self.cache = cache
        self._lock = threading.Lock()
        conn.execute("BEGIN")
        try:
            self.seq, self.vec_top = _heads(conn)
            sets.load(conn)
        finally:
            conn.execute("COMMIT")

    def follow(self, conn: sqlite3.Connection) -> int:
        """Inside a read transaction on `conn`: apply the owner's changes up to this snapshot; -> its
        sequence number (the read cache's generation for this reader)."""
        seq, vec_top = _heads(conn)  # also fixes the snapshot
        if seq > self.seq or vec_top > self.vec_top:
            with self._lock:
                loaded = self._apply_log(conn, seq) if seq > self.seq else set()
                if vec_top > self.vec_top:
                    self._add_vectors(conn, vec_top, skip=loaded)
        return seq

    def _apply_log(self, conn: sqlite3.Connection, seq: int) -> set[int]:
        """-> the ids of the sets loaded whole (at this snapshot)."""
        rows = conn.execute(
            "SELECT seq, kind, id, set_id FROM changes WHERE seq > ? AND seq <= ? ORDER BY seq", (self.seq, seq)
        ).fetchall()
        if not rows or rows[0][0] != self.seq + 1:  # pruned past us: reload everything we follow
            self.cache.invalidate_all(at=seq)
            self.sets.catch_up_all(conn)
            self.seq = seq
            return self.sets.load(conn) | set(self.sets.by_id)
        touched = {i for _, kind, i, _ in rows if kind == TOUCHED}
        removed: dict[int, list[int]] = {}
        for _, kind, i, set_id in rows:
            if kind == REMOVED:
                removed.setdefault(set_id, []).append(i)
        loaded = self.sets.load(conn) if any(kind == SETS for _, kind, _, _ in rows) else set()
        for set_id, ids in removed.items():
            self.sets.remove(set_id, ids)
        self.cache.invalidate(touched, at=seq)
        self.seq = seq
        return loaded

    def _add_vectors(self, conn: sqlite3.Connection, vec_top: int, skip: set[int]) -> None:
        by_set: dict[int, tuple[list[int], list[bytes]]] = {}
        for i, set_id, vec in conn.execute(
            "SELECT id, set_id, vec FROM vectors WHERE id > ? AND id <= ? ORDER BY id", (self.vec_top, vec_top)
        ):
            ids, vecs = by_set.setdefault(set_id, ([], []))
            ids.append(i)
            vecs.append(vec)
        for set_id, (ids, vecs) in by_set.items():
            if set_id not in skip:  # sets loaded whole at this snapshot have these
                self.sets.add(set_id, ids, vecs)
        self.vec_top = vec_top
