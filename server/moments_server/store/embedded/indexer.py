"""The indexer thread: deferred HNSW graph insertion and whole-graph rebuilds, in the writers' idle time.

HNSW sets (with `deferred_index`, the default) only append committed vectors to the set's exactly
searched tail; this thread inserts them into the graph in the background (see vectors.py), and rebuilds
graphs grown in a bad order (rebuild.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from .rebuild import Rebuild
from .vectors import DRAIN_CHUNK, VectorIndex

log = logging.getLogger(__name__)

# The indexer inserts tails into HNSW graphs only after INDEX_IDLE_S without a write: on this class of
# machine (2 vCPUs) graph insertion running beside a bulk load slowed the load from 21.7k to 12.0k
# descriptors/s, as CPU-heavy work in another process does too (19.9k -> 12.2k). Loads up to TAIL_MAX
# pending vectors per set run at the SQLite rate; past it the committing writer inserts (vectors.py).
INDEX_IDLE_S = 0.05


class Indexer:
    """`indexes()` lists the live sets' indexes; `writing` is the engine's writer lock (held: not idle).
    The engine stamps `last_write` after each write transaction."""

    def __init__(self, indexes: Callable[[], list[VectorIndex]], writing: threading.Lock) -> None:
        self._indexes = indexes
        self._writing = writing
        self.last_write = 0.0
        self.rebuilding = False
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()  # starting it (once, from whichever thread commits first)
        self._wake = threading.Event()
        self._stop = False

    def wake(self) -> None:
        if self._thread is None and not self._stop:
            with self._start_lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._loop, name="moments-indexer", daemon=True)
                    self._thread.start()
        self._wake.set()

    def stop(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def pending(self) -> int:
        """Committed vectors not in their HNSW graph yet (searched exactly meanwhile)."""
        return sum(vi.pending for vi in self._indexes())

    def wait(self, timeout: float | None = None, rebuilds: bool = False) -> bool:
        """Block until every committed vector is in its graph (and, with `rebuilds`, until no graph
        rebuild is due or running); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def busy() -> bool:
            if self.pending():
                return True
            if not rebuilds:
                return False
            return self.rebuilding or any(vi.rebuild_due for vi in self._indexes())

        while busy():
            if deadline is not None and time.monotonic() > deadline:
                return False
            self.wake()
            time.sleep(0.005)
        return True

    def _loop(self) -> None:
        """Background graph work, only after INDEX_IDLE_S without a write (writers go first, see
        INDEX_IDLE_S): first move committed tails into their HNSW graphs, a chunk at a time, round-robin
        over the sets; then rebuild graphs that are due (rebuild.Rebuild), a chunk at a time."""
        rebuilds: dict[int, Rebuild] = {}
        try:
            while not self._stop:
                live = {id(vi): vi for vi in self._indexes()}
                for key in [k for k in rebuilds if k not in live]:  # its set was dropped
                    rebuilds.pop(key).abort()
                busy = [vi for vi in live.values() if vi.pending]
                due = [vi for vi in live.values() if id(vi) in rebuilds or vi.rebuild_due]
                self.rebuilding = bool(due)
                if not busy and not due:
                    self._wake.wait()
                    self._wake.clear()
                    continue
                quiet = time.monotonic() - self.last_write
                if self._writing.locked() or quiet < INDEX_IDLE_S:
                    self._wake.wait(max(INDEX_IDLE_S - quiet, 0.005))  # stop() sets it
                    self._wake.clear()
                    continue
                if busy:
                    for vi in busy:
                        vi.drain(DRAIN_CHUNK)
                    continue
                vi = due[0]
                rb = rebuilds.get(id(vi))
                if rb is None:
                    rb = rebuilds[id(vi)] = Rebuild(vi)
                    log.info("rebuilding an HNSW graph in shuffled order: %d vectors", len(rb.order))
                if rb.step():
                    rb.finish()
                    del rebuilds[id(vi)]
                    log.info("HNSW graph rebuilt: %d vectors", vi.built)
        finally:
            for rb in rebuilds.values():
                rb.abort()
            self.rebuilding = False
