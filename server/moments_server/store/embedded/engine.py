"""The embedded engine: ApertureDB's JSON query language on SQLite (WAL) + FAISS.

    engine = Engine(data_dir)                  # opens or creates the store
    response, blobs = engine.query(commands, blobs)
    engine.close()                             # persists the vector indexes

Storage: SQLite is the source of truth (tables: storage.py); each descriptor set's FAISS index is a
cache of its vectors (sets.py, vectors.py); large blobs are files (blobs.py).

Transactions: one query is one SQLite transaction (tx.py). Read-only queries run on per-thread reader
connections (WAL snapshots: they never wait for the writer); queries that write take the single
writer connection under a lock, `BEGIN IMMEDIATE`, and commit with `synchronous=FULL`, so an
acknowledged query survives kill -9 and power loss. Inserts are buffered per transaction and
flushed with `executemany` before anything in the transaction reads, and at commit. After the commit
the FAISS indexes are updated (one `add` per set per transaction) under their own brief write lock;
HNSW sets (with `deferred_index`, the default) only append the vectors to the set's exactly-searched
tail, and the indexer thread inserts them into the graph in the background (indexer.py).

Cascades (decided; SEMANTICS.md leaves them OPEN): deleting any object deletes its connections;
DeleteVideo deletes the video's clips (a clip cannot outlive its video in ApertureDB's model), not the
descriptors or images connected to those clips (delete those by constraints, e.g. on `video_id`);
DeleteDescriptorSet deletes its descriptors.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import defaults
from ..file_blob import FileBlob
from . import commands as cmds
from . import jsonio, vectors
from .blobs import BlobFiles
from .errors import QueryError
from .indexer import Indexer
from .readcache import ReadCache
from .replica import ReplicaSync, log_changes
from .sets import SetRegistry
from .storage import DEFAULT_INDEXED, SCHEMA, IdAllocator, connect, ensure_sql_index
from .tx import Tx

log = logging.getLogger(__name__)


class Engine:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        synchronous: str = "FULL",
        indexed_properties: Sequence[str] = DEFAULT_INDEXED,
        omp_threads: int | None = defaults.OMP_THREADS,
        deferred_index: bool = defaults.DEFERRED_INDEX,
        read_cache_rows: int = defaults.READ_CACHE_ROWS,
        replica: bool = False,
    ) -> None:
        """replica: a read-only copy for another process (replica.py): reads this data dir, which one
        writer Engine elsewhere owns, and follows its change log; it never writes a file."""
        vectors.OMP_THREADS = omp_threads  # see vectors.limit_omp_threads
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "store.sqlite3"
        self.vec_dir = self.data_dir / "vectors"
        self.blob_files = BlobFiles(self.data_dir / "blobs")
        self._synchronous = synchronous
        self._wlock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False
        self.indexer = Indexer(lambda: [s.index for s in self.sets.all()], self._wlock)
        self.sets = SetRegistry(self.vec_dir, deferred_index, self.indexer.wake, save_caught_up=not replica)
        self.cache = ReadCache(read_cache_rows)
        self.replica: ReplicaSync | None = None
        self.ids: IdAllocator | None = None
        if replica:
            if not self.db_path.exists():
                raise FileNotFoundError(f"no store to follow in {self.data_dir} (its owner makes it)")
            self._w = connect(self.db_path, self._synchronous)
            self._w.execute("PRAGMA query_only=ON")
            self.replica = ReplicaSync(self._w, self.sets, self.cache)
            return
        self._w = connect(self.db_path, self._synchronous)
        # Checkpoint the WAL every 64 MiB rather than every 4 MiB: bulk ingest commits several MiB of
        # vectors at a time, and checkpointing after each one measured ~30% more commit time.
        self._w.execute("PRAGMA wal_autocheckpoint=16384")
        with self._wlock:
            self._w.executescript(SCHEMA)
            for p in indexed_properties:
                ensure_sql_index(self._w, "objects", p)
            self.ids = IdAllocator(self._w)
            self._recover()
        if any(s.index.pending or s.index.rebuild_due for s in self.sets.all()):
            self.indexer.wake()  # caught-up rows to insert, or a graph due for a rebuild

    def _reader(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = connect(self.db_path, self._synchronous)
            c.execute("PRAGMA query_only=ON")
            c.execute("PRAGMA cache_size=-16384")  # 16 MiB per reader thread (the writer keeps 64 MiB)
            self._local.conn = c
            with self._readers_lock:
                self._readers.append(c)
        return c

    def _recover(self) -> None:
        """Orphan blob files out; sets loaded; each FAISS index caught up with SQLite."""
        referenced = {r[0] for r in self._w.execute("SELECT file FROM blobdata WHERE file IS NOT NULL")}
        n = self.blob_files.remove_orphans(referenced)
        if n:
            log.warning("removed %d orphan blob file(s)", n)
        self.sets.load(self._w)
        self.sets.remove_stale_files()

    # -- deferred graph insertion (indexer.py) -------------------------------------------------------

    def pending_vectors(self) -> int:
        """Committed vectors not in their HNSW graph yet (searched exactly meanwhile)."""
        return self.indexer.pending()

    def wait_indexed(self, timeout: float | None = None, rebuilds: bool = False) -> bool:
        """Block until every committed vector is in its graph (and, with `rebuilds`, until no graph
        rebuild is due or running); False on timeout."""
        return self.indexer.wait(timeout, rebuilds)

    # -- queries -----------------------------------------------------------------------------------

    def query(self, commands: Any, blobs: Sequence[bytes | FileBlob] = ()) -> tuple[Any, list[bytes]]:
        if self._closed:
            return {"status": -1, "info": "The store is closed"}, []
        if isinstance(commands, str | bytes):
            try:
                commands = jsonio.loads(commands)
            except ValueError as e:
                return {"status": -1, "info": f"Invalid JSON: {e}"}, []
        try:
            names = cmds.validate(commands)
        except QueryError as e:
            return {"status": -1, "info": e.message}, []
        write = any(n not in cmds.READ_ONLY for n in names)
        if write and self.replica is not None:
            return {"status": -1, "info": "This store is a read-only replica: send writes to its owner"}, []
        if write:
            with self._wlock:
                try:
                    return self._run(self._w, True, commands, names, blobs)
                finally:
                    self.indexer.last_write = time.monotonic()
        return self._run(self._reader(), False, commands, names, blobs)

    def _run(
        self,
        conn: sqlite3.Connection,
        write: bool,
        commands: list[dict[str, Any]],
        names: list[str],
        blobs: Sequence[bytes | FileBlob],
    ) -> tuple[Any, list[bytes]]:
        snap = self.cache.snapshot() if not write and self.replica is None else None  # before the first read
        # a reader that is not a replica begins on its first SQL (Tx.conn): a cached search reads none
        eager = write or self.replica is not None
        tx = Tx(conn, blobs, self.sets, self.blob_files, self.cache, self.ids if write else None, snap, eager)
        if eager:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        if self.replica is not None:
            tx.snap = self.replica.follow(conn)  # the owner's changes up to this snapshot, applied
        results: list[dict[str, Any]] = []
        i = 0
        try:
            for idx, (cmd, name) in enumerate(zip(commands, names, strict=True)):
                i = idx
                results.append({name: cmds.run(tx, name, cmd[name])})
            if tx.blobs_used != len(blobs):
                i = len(commands) - 1
                raise QueryError(f"The query has {len(blobs)} blob(s) but its commands use {tx.blobs_used}")
            if write:
                assert self.ids is not None
                tx.flush()
                self.ids.save(conn)
                self.cache.invalidate(tx.touched)
                log_changes(conn, tx.touched, tx.removed_vectors, tx.sets_changed)
            if tx.begun:
                conn.execute("COMMIT")
        except Exception as e:
            if tx.begun:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            if write:
                self.cache.committed()
            tx.discard()
            if isinstance(e, QueryError):
                info = e.message
            else:
                log.exception("internal error in %s", names[i] if i < len(names) else "?")
                info = f"Internal error: {type(e).__name__}: {e}"
            return {"FailedCommand": {names[i]: commands[i][names[i]]}, "info": info, "status": -1}, []
        if write:
            self.cache.committed()
            tx.apply_committed()
        return results, tx.out_blobs

    # -- lifecycle ---------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Persist every changed vector index (also done by close())."""
        with self._wlock:
            self.sets.save_dirty()

    def close(self) -> None:
        """Stop the indexer, finish the tails (at most TAIL_MAX vectors per set), persist the indexes."""
        if self._closed:
            return
        self.indexer.stop()
        if self.replica is None:  # a replica's indexes are its own copies: nothing to keep
            self.sets.drain_all()
            self.checkpoint()
        with self._wlock:
            self._closed = True
            with contextlib.suppress(sqlite3.Error):
                self._w.execute("PRAGMA optimize")
            self._w.close()
        with self._readers_lock:
            for c in self._readers:
                with contextlib.suppress(sqlite3.Error):
                    c.close()
            self._readers.clear()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
