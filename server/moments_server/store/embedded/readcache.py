"""A read-through cache of object rows and graph adjacency for read-only queries.

Profiled under 64 search clients (shapes-demo, 2 videos), 58 % of the server's samples were the store
query, and most of that was rebuilding the same rows on every search: the kNN hits' rows fetched through
`json_each`, FindClip's `is_connected_to` subqueries, the group_by_source join, and JSON decoding of the
same properties. A descriptor's properties and its clip edge do not change between searches, so reads keep
them here: the decoded properties of each row, and each object's neighbours per connection class.

Consistency (readers run on WAL snapshots; one writer):
- The writer names every existing object whose row or connections it changes (`Tx.touched`) and calls
  `invalidate` *before* its COMMIT: those entries are dropped and the ids marked dirty at the next
  generation; `committed` then advances the generation.
- A reader takes `snapshot()` (the generation) before its first read. It may use an entry only if the
  entry was valid at its snapshot (`valid_from <= snap`), and may store what it read only if the id has
  not been changed since (`dirty[id] <= snap`); both checks run under the lock that `invalidate` takes.
  So a reader never sees a row newer or older than its own snapshot through the cache.
- Writers never use the cache (they must see their own uncommitted changes).
Misses are never cached (new objects need no invalidation). The cache is bounded (oldest entries go
first); when the dirty marks grow past their bound everything is dropped and older snapshots stop
using the cache.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

Row = tuple[Any, ...]  # (id, cls, props JSON, set_id, label): ROW_COLS
Edge = tuple[int, str, bool]  # (the other object, connection class, True when the edge goes out of this one)


class CachedRow:
    __slots__ = ("props", "row")

    def __init__(self, row: Row, props: dict[str, Any]) -> None:
        self.row = row
        # Decoded property values (decode_value applied), reserved keys included. Shared by every reader:
        # never mutate them.
        self.props = props


class ReadCache:
    def __init__(self, capacity: int = 250_000, dirty_max: int = 100_000) -> None:
        """capacity: rows (and, apart, objects' edge lists) kept at most; 0 turns the cache off."""
        self.capacity = capacity
        self.dirty_max = dirty_max
        self._lock = threading.Lock()
        # id -> (value, valid_from): rows (CachedRow) and edges (tuple[Edge, ...]), each bounded by capacity
        self._rows: dict[int, tuple[Any, int]] = {}
        self._edges: dict[int, tuple[Any, int]] = {}
        self._dirty: dict[int, int] = {}
        self._gen = 0
        self._floor = 0  # snapshots older than this use nothing (set when the dirty marks are dropped)

    def snapshot(self) -> int:
        return self._gen

    # -- readers --------------------------------------------------------------------------------------
    def rows(self, ids: Iterable[int], snap: int) -> tuple[dict[int, CachedRow], list[int]]:
        """(the cached rows valid at `snap`, the ids to read from SQLite)."""
        return self._get(self._rows, ids, snap)

    def edges(self, ids: Iterable[int], snap: int) -> tuple[dict[int, tuple[Edge, ...]], list[int]]:
        return self._get(self._edges, ids, snap)

    def put_rows(self, values: dict[int, CachedRow], snap: int) -> None:
        self._put(self._rows, values, snap)

    def put_edges(self, values: dict[int, tuple[Edge, ...]], snap: int) -> None:
        self._put(self._edges, values, snap)

    def _get(
        self, table: dict[int, tuple[Any, int]], ids: Iterable[int], snap: int
    ) -> tuple[dict[int, Any], list[int]]:
        found: dict[int, Any] = {}
        missing: list[int] = []
        with self._lock:
            if snap < self._floor:
                return found, list(ids)
            get = table.get
            for i in ids:
                e = get(i)
                if e is not None and e[1] <= snap:
                    found[i] = e[0]
                else:
                    missing.append(i)
        return found, missing

    def _put(self, table: dict[int, tuple[Any, int]], values: dict[int, Any], snap: int) -> None:
        """Keep what a reader read at `snap`, for the ids nobody changed since."""
        with self._lock:
            if snap < self._floor or not values or self.capacity <= 0:
                return
            dirty, floor = self._dirty, self._floor
            for i, v in values.items():
                valid_from = dirty.get(i, floor)
                if valid_from <= snap:
                    table[i] = (v, valid_from)
            if len(table) > self.capacity:
                drop = len(table) - self.capacity + self.capacity // 10
                for k in list(table)[:drop]:  # dicts keep insertion order: the oldest go first
                    del table[k]

    # -- the writer -----------------------------------------------------------------------------------
    def invalidate(self, ids: set[int], at: int | None = None) -> None:
        """Before a write commits: forget `ids` and mark them changed as of the next generation (or of
        generation `at`: a replica's, from the owner's change log)."""
        if not ids:
            return
        with self._lock:
            pending = self._gen + 1 if at is None else at
            if len(self._dirty) + len(ids) > self.dirty_max:
                self._drop_all(pending)
                return
            for i in ids:
                self._dirty[i] = pending
                self._rows.pop(i, None)
                self._edges.pop(i, None)

    def invalidate_all(self, at: int) -> None:
        with self._lock:
            self._drop_all(at)

    def _drop_all(self, floor: int) -> None:
        self._rows.clear()
        self._edges.clear()
        self._dirty.clear()
        self._floor = floor

    def committed(self) -> None:
        with self._lock:
            self._gen += 1

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {"rows": len(self._rows), "edges": len(self._edges), "dirty": len(self._dirty)}
