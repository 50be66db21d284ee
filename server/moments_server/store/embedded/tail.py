"""A set's tail: descriptors committed to SQLite that its HNSW graph does not hold yet (deferred insertion,
see vectors.py)."""

from __future__ import annotations

import numpy as np


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
