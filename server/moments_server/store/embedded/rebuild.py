"""Whole rebuilds of deferred HNSW graphs.

Frames arrive video by video, and a graph grown in that order is much worse than one built from the same
vectors in shuffled order (recall@10 0.75 vs 0.94 at 100k CLIP-like frames, make bench figure
5.100k.order). Once the vectors inserted one chunk at a time since the graph's last whole build are at
least as many as it then held (and >= REBUILD_MIN, `VectorIndex.rebuild_due`), the indexer builds a new
graph from every live vector in shuffled order, a chunk at a time in idle time, while the old one keeps
serving, then swaps it in. Doubling keeps the total rebuild work under twice a single build; a rebuild
holds a second graph in memory while it runs.
"""

from __future__ import annotations

import numpy as np

from .vectors import REBUILD_CHUNK, VectorIndex, limit_omp_threads


class Rebuild:
    """A whole rebuild of one set's graph: `step()` inserts the next chunk of the live vectors, in shuffled
    order, into a private new graph (reading them back from the old one under its read lock); `finish()`
    swaps it in under the write lock, after inserting what was drained into the old graph meanwhile and
    tombstoning what was deleted. `abort()` drops it."""

    def __init__(self, vi: VectorIndex, seed: int = 0) -> None:
        self.vi = vi
        live = vi.start_change_log()
        self.order = np.random.default_rng(seed).permutation(live)
        self.pos = 0
        self.new = vi.empty_graph()

    @property
    def done(self) -> bool:
        return self.pos >= len(self.order)

    def step(self, n: int = REBUILD_CHUNK) -> bool:
        """Insert the next `n` vectors; -> True when every snapshot vector is in the new graph."""
        limit_omp_threads()
        ids = self.order[self.pos : self.pos + n]
        if len(ids):
            self.new.add_with_ids(self.vi.read_back(ids), ids)
            self.pos += len(ids)
        return self.done

    def finish(self) -> None:
        self.vi.swap_graph(self.new, self.order)

    def abort(self) -> None:
        self.vi.stop_change_log()
