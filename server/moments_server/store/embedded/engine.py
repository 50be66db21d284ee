"""The embedded engine: ApertureDB's JSON query language on SQLite (WAL) + FAISS.

    engine = Engine(data_dir)                  # opens or creates the store
    response, blobs = engine.query(commands, blobs)
    engine.close()                             # persists the vector indexes

Storage (SQLite is the source of truth):
- `objects(id, cls, props, set_id, label)`: every object: entities (their class), `_Image`, `_Video`,
  `_Clip`, `_Blob`, `_DescriptorSet`, `_Descriptor`. Properties are a JSON object; system fields
  (clip ranges, probed video fields, set name/dimensions/metrics/engines) live there under `_` keys.
  `_uniqueid` is `"1.<id>.0"` for objects and `"2.<id>.0"` for connections.
- `conns(id, cls, src, dst, props)`: connections. A clip is connected to its video by a `_VideoToClip`
  edge (video -> clip); a descriptor's membership in its set is `set_id` and answers
  `is_connected_to` with `connection_class: "_DescriptorSetToDescriptor"`.
- `vectors(id, set_id, vec)`: the float32 vectors (as given), `blobdata(id, data, file)`: blobs,
  inline when small, else a file name under `blobs/` (see blobs.py).

Transactions: one query is one SQLite transaction. Read-only queries run on per-thread reader
connections (WAL snapshots: they never wait for the writer); queries that write take the single
writer connection under a lock, `BEGIN IMMEDIATE`, and commit with `synchronous=FULL`, so an
acknowledged query survives kill -9 and power loss. Inserts are buffered per transaction and
flushed with `executemany` before anything in the transaction reads, and at commit. After the commit
the FAISS indexes are updated (one `add` per set per transaction) under their own brief write lock;
HNSW sets (with `deferred_index`, the default) only append the vectors to the set's exactly-searched
tail, and the indexer thread inserts them into the graph in the background (see vectors.py).

Cascades (decided; SEMANTICS.md leaves them OPEN): deleting any object deletes its connections;
DeleteVideo deletes the video's clips (a clip cannot outlive its video in ApertureDB's model), not the
descriptors or images connected to those clips (delete those by constraints, e.g. on `video_id`);
DeleteDescriptorSet deletes its descriptors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import commands as cmds
from . import jsonio
from .blobs import BlobFiles, FileBlob
from .errors import QueryError
from .model import Binding, SetInfo
from .readcache import ReadCache
from .replica import ReplicaSync, log_changes
from .vectors import HnswParams, VectorIndex

log = logging.getLogger(__name__)

# The indexer inserts tails into HNSW graphs only after INDEX_IDLE_S without a write: on this class of
# machine (2 vCPUs) graph insertion running beside a bulk load slowed the load from 21.7k to 12.0k
# descriptors/s, as CPU-heavy work in another process does too (19.9k -> 12.2k). Loads up to TAIL_MAX
# pending vectors per set run at the SQLite rate; past it the committing writer inserts (vectors.py).
INDEX_IDLE_S = 0.05

SCHEMA = """
CREATE TABLE IF NOT EXISTS objects(
    id INTEGER PRIMARY KEY, cls TEXT NOT NULL, props TEXT NOT NULL, set_id INTEGER, label TEXT);
CREATE INDEX IF NOT EXISTS objects_cls ON objects(cls);
CREATE TABLE IF NOT EXISTS conns(
    id INTEGER PRIMARY KEY, cls TEXT NOT NULL, src INTEGER NOT NULL, dst INTEGER NOT NULL,
    props TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS conns_src ON conns(src, cls);
CREATE INDEX IF NOT EXISTS conns_dst ON conns(dst, cls);
CREATE TABLE IF NOT EXISTS vectors(id INTEGER PRIMARY KEY, set_id INTEGER NOT NULL, vec BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS vectors_set ON vectors(set_id);
CREATE TABLE IF NOT EXISTS blobdata(id INTEGER PRIMARY KEY, data BLOB, file TEXT);
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS changes(
    seq INTEGER PRIMARY KEY, kind INTEGER NOT NULL, id INTEGER NOT NULL, set_id INTEGER);
CREATE TABLE IF NOT EXISTS prop_indexes(
    target TEXT NOT NULL, cls TEXT NOT NULL, prop TEXT NOT NULL, kind TEXT NOT NULL,
    PRIMARY KEY(target, cls, prop, kind));
"""

# 16 KiB pages: a 512-d vector row (2 KiB) left half of each 4 KiB page empty; 16 KiB pages made the
# store 26% smaller and bulk ingest ~15% faster (measured at 20k descriptors).
PAGE_SIZE = 16384

# Properties indexed from the start (Moments filters on them); CreateIndex adds others.
DEFAULT_INDEXED = ("video_id",)


@dataclass
class Tx:
    engine: Engine
    conn: sqlite3.Connection
    write: bool
    blobs_in: Sequence[bytes | FileBlob]
    blob_pos: int = 0
    refs: dict[int, Binding] = field(default_factory=dict)
    out_blobs: list[bytes] = field(default_factory=list)
    p_objects: list[tuple[Any, ...]] = field(default_factory=list)
    p_conns: list[tuple[Any, ...]] = field(default_factory=list)
    p_vectors: list[tuple[Any, ...]] = field(default_factory=list)
    p_blobdata: list[tuple[Any, ...]] = field(default_factory=list)
    new_files: list[str] = field(default_factory=list)
    removed_files: list[str] = field(default_factory=list)
    vec_adds: dict[int, tuple[list[int], list[bytes]]] = field(default_factory=dict)
    vec_removes: dict[int, list[int]] = field(default_factory=dict)
    new_sets: dict[str, SetInfo] = field(default_factory=dict)
    dropped_sets: set[str] = field(default_factory=set)
    # Readers: the read cache's generation at the start (None for writers, which never use the cache).
    snap: int | None = None
    # Writers: existing objects whose row or connections change (the read cache forgets them at commit);
    # ids from first_new_id on were made by this transaction and are in no cache.
    touched: set[int] = field(default_factory=set)
    first_new_id: int = 0
    # Decoded properties of rows read through the cache, for the response builder.
    props_of: dict[int, dict[str, Any]] = field(default_factory=dict)

    def touch(self, ids: Any) -> None:
        first = self.first_new_id
        self.touched.update(i for i in ids if i < first)

    def next_blob(self, cmd: str) -> bytes:
        if self.blob_pos >= len(self.blobs_in):
            raise QueryError(f"{cmd}: expects a blob but the query has only {len(self.blobs_in)} blob(s)")
        b = self.blobs_in[self.blob_pos]
        self.blob_pos += 1
        if isinstance(b, FileBlob):
            return b.read()
        return b if type(b) is bytes else bytes(b)

    def next_object_blob(self, cmd: str) -> bytes | FileBlob:
        """An image's, video's or blob's data: a FileBlob stays a file (BlobFiles.write copies it)."""
        if self.blob_pos < len(self.blobs_in) and isinstance(self.blobs_in[self.blob_pos], FileBlob):
            b = self.blobs_in[self.blob_pos]
            self.blob_pos += 1
            return b
        return self.next_blob(cmd)

    def new_id(self) -> int:
        return self.engine._alloc_id()

    def new_conn_id(self) -> int:
        return self.engine._alloc_conn_id()

    def flush(self) -> None:
        c = self.conn
        if self.p_objects:
            c.executemany("INSERT INTO objects VALUES (?,?,?,?,?)", self.p_objects)
            self.p_objects.clear()
        if self.p_conns:
            c.executemany("INSERT INTO conns VALUES (?,?,?,?,?)", self.p_conns)
            first = self.first_new_id
            for conn in self.p_conns:  # an existing object's edges change
                if conn[2] < first:
                    self.touched.add(conn[2])
                if conn[3] < first:
                    self.touched.add(conn[3])
            self.p_conns.clear()
        if self.p_vectors:
            c.executemany("INSERT INTO vectors VALUES (?,?,?)", self.p_vectors)
            self.p_vectors.clear()
        if self.p_blobdata:
            c.executemany("INSERT INTO blobdata VALUES (?,?,?)", self.p_blobdata)
            self.p_blobdata.clear()

    def get_set(self, name: Any, cmd: str) -> SetInfo:
        if not isinstance(name, str):
            raise QueryError(f"{cmd}: 'set' must be a string")
        s = self.new_sets.get(name)
        if s is None and name not in self.dropped_sets:
            s = self.engine._sets.get(name)
        if s is None:
            raise QueryError(f"{cmd}: DescriptorSet {name!r} does not exist")
        return s

    def set_name_of(self, set_id: int) -> str:
        for s in self.new_sets.values():
            if s.id == set_id:
                return s.name
        known = self.engine._sets_by_id.get(set_id)
        return known.name if known else ""

    def set_has_pending(self, set_id: int) -> bool:
        return set_id in self.vec_adds or set_id in self.vec_removes


class Engine:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        synchronous: str = "FULL",
        indexed_properties: Sequence[str] = DEFAULT_INDEXED,
        omp_threads: int | None = 1,
        deferred_index: bool = True,
        read_cache_rows: int = 250_000,
        replica: bool = False,
    ) -> None:
        """replica: a read-only copy for another process (replica.py): reads this data dir, which one
        writer Engine elsewhere owns, and follows its change log; it never writes a file."""
        from . import vectors

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
        self._sets: dict[str, SetInfo] = {}
        self._sets_by_id: dict[int, SetInfo] = {}
        self._deferred = deferred_index
        self._indexer: threading.Thread | None = None
        self._indexer_lock = threading.Lock()  # starting it (once, from whichever thread commits first)
        self._indexer_wake = threading.Event()
        self._indexer_stop = False
        self._last_write = 0.0
        self._rebuilding = False
        self.cache = ReadCache(read_cache_rows)
        self.replica: ReplicaSync | None = None
        if replica:
            if not self.db_path.exists():
                raise FileNotFoundError(f"no store to follow in {self.data_dir} (its owner makes it)")
            self._w = self._connect()
            self._w.execute("PRAGMA query_only=ON")
            self.replica = ReplicaSync(self)
            return
        self._w = self._connect()
        # Checkpoint the WAL every 64 MiB rather than every 4 MiB: bulk ingest commits several MiB of
        # vectors at a time, and checkpointing after each one measured ~30% more commit time.
        self._w.execute("PRAGMA wal_autocheckpoint=16384")
        with self._wlock:
            self._w.executescript(SCHEMA)
            for p in indexed_properties:
                self._ensure_sql_index("objects", p)
            # Ids are never reused (the vector index fingerprint relies on it): the next ids are kept
            # in `meta`, written with every write transaction.
            hw = dict(self._w.execute("SELECT key, value FROM meta").fetchall())
            top = self._w.execute("SELECT max(id) FROM objects").fetchone()[0] or 0
            ctop = self._w.execute("SELECT max(id) FROM conns").fetchone()[0] or 0
            self._next_id = max(top + 1, hw.get("next_id", 1))
            self._next_conn_id = max(ctop + 1, hw.get("next_conn_id", 1))
            self._recover()
        if any(s.index.pending or s.index.rebuild_due for s in self._sets.values()):
            self._wake_indexer()  # caught-up rows to insert, or a graph due for a rebuild

    # -- connections -----------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        c = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False, timeout=60)
        c.execute(f"PRAGMA page_size={PAGE_SIZE}")  # only takes effect when the database is created
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(f"PRAGMA synchronous={self._synchronous}")
        c.execute("PRAGMA foreign_keys=OFF")
        c.execute("PRAGMA cache_size=-65536")
        c.execute("PRAGMA temp_store=MEMORY")
        return c

    def _reader(self) -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if c is None:
            c = self._connect()
            c.execute("PRAGMA query_only=ON")
            c.execute("PRAGMA cache_size=-16384")  # 16 MiB per reader thread (the writer keeps 64 MiB)
            self._local.conn = c
            with self._readers_lock:
                self._readers.append(c)
        return c

    # Only writers allocate ids, and they hold the writer lock.
    def _alloc_id(self) -> int:
        i = self._next_id
        self._next_id = i + 1
        return i

    def _alloc_conn_id(self) -> int:
        i = self._next_conn_id
        self._next_conn_id = i + 1
        return i

    def _ensure_sql_index(self, table: str, prop: str) -> None:
        from .constraints import prop_expr

        alias_expr = prop_expr("x", prop).replace("x.props", "props")
        name = f"ix_{table}_{zlib.crc32(prop.encode()):08x}_{''.join(ch for ch in prop if ch.isalnum())[:30]}"
        # objects: set_id last, so that a filtered kNN's candidate query (class, property, set) is
        # answered from the index alone
        cols = f"cls, {alias_expr}, set_id" if table == "objects" else f"cls, {alias_expr}"
        self._w.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON {table}({cols})')

    # -- start-up recovery --------------------------------------------------------------------------

    def _recover(self) -> None:
        """Orphan blob files out; sets loaded; each FAISS index caught up with SQLite."""
        referenced = {r[0] for r in self._w.execute("SELECT file FROM blobdata WHERE file IS NOT NULL")}
        n = self.blob_files.remove_orphans(referenced)
        if n:
            log.warning("removed %d orphan blob file(s)", n)
        self.load_sets(self._w)
        self._cleanup_index_files()

    def load_sets(self, conn: sqlite3.Connection) -> set[int]:
        """The descriptor sets as `conn` sees them: new ones loaded (their saved index caught up with
        SQLite), dropped ones forgotten; -> the ids of the new ones."""
        rows = conn.execute("SELECT id, props FROM objects WHERE cls='_DescriptorSet'").fetchall()
        new: set[int] = set()
        for gone in set(self._sets_by_id) - {r[0] for r in rows}:
            self._sets.pop(self._sets_by_id.pop(gone).name, None)
        for set_id, props_json in rows:
            if set_id in self._sets_by_id:
                continue
            p = json.loads(props_json)
            metric, engine = p["_metrics"][0], p["_engines"][0]
            hnsw = HnswParams.from_properties(p)
            vi, fingerprint = VectorIndex.load(
                self.vec_dir, set_id, p["_dimensions"], metric, engine, hnsw, self._deferred
            )
            vi.on_tail = self._wake_indexer
            self._catch_up(conn, set_id, vi, fingerprint)
            info = SetInfo(set_id, p["_name"], p["_dimensions"], metric, p["_metrics"], p["_engines"], vi)
            self._sets[info.name] = info
            self._sets_by_id[set_id] = info
            new.add(set_id)
        return new

    def _catch_up(
        self, conn: sqlite3.Connection, set_id: int, vi: VectorIndex, fingerprint: tuple[int, int] | None
    ) -> None:
        n, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM vectors WHERE set_id=?", (set_id,)).fetchone()
        if fingerprint == (n, top) and vi.ntotal == n:
            return  # unchanged since it was saved (see VectorIndex.save)
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
                chunk = cur.fetchmany(50_000)
                if not chunk:
                    break
                for i, v in chunk:
                    if i in want:
                        ids.append(i)
                        vecs.append(v)
                if len(ids) >= 50_000:
                    self._add_vectors(vi, ids, vecs)
                    ids, vecs = [], []
            self._add_vectors(vi, ids, vecs)
        if len(to_add) or len(to_drop):
            log.info("vector index %d caught up: +%d -%d", set_id, len(to_add), len(to_drop))
            if self.replica is None:
                vi.save(self.vec_dir, set_id)

    @staticmethod
    def _add_vectors(vi: VectorIndex, ids: list[int], vecs: list[bytes]) -> None:
        if not ids:
            return
        x = np.frombuffer(b"".join(vecs), dtype="<f4").reshape(len(ids), vi.dims)
        vi.add(np.asarray(ids, dtype=np.int64), x)

    def _cleanup_index_files(self) -> None:
        if not self.vec_dir.exists():
            return
        live = {str(i) for i in self._sets_by_id}
        for f in self.vec_dir.iterdir():
            if f.name.split(".")[0] not in live:
                f.unlink(missing_ok=True)

    # -- deferred graph insertion ------------------------------------------------------------------

    def new_index(self, dims: int, metric: str, engine: str, hnsw: HnswParams | None) -> VectorIndex:
        vi = VectorIndex(dims, metric, engine, hnsw, self._deferred)
        vi.on_tail = self._wake_indexer
        return vi

    def _wake_indexer(self) -> None:
        if self._indexer is None and not self._closed:
            with self._indexer_lock:
                if self._indexer is None:
                    self._indexer = threading.Thread(target=self._index_loop, name="moments-indexer", daemon=True)
                    self._indexer.start()
        self._indexer_wake.set()

    def _index_loop(self) -> None:
        """Background graph work, only after INDEX_IDLE_S without a write (writers go first, see
        INDEX_IDLE_S): first move committed tails into their HNSW graphs, a chunk at a time, round-robin
        over the sets; then rebuild graphs that are due (vectors.Rebuild), a chunk at a time."""
        from .vectors import DRAIN_CHUNK, Rebuild

        rebuilds: dict[int, Rebuild] = {}
        try:
            while not self._indexer_stop:
                live = {id(s.index): s.index for s in list(self._sets.values())}
                for key in [k for k in rebuilds if k not in live]:  # its set was dropped
                    rebuilds.pop(key).abort()
                busy = [vi for vi in live.values() if vi.pending]
                due = [vi for vi in live.values() if id(vi) in rebuilds or vi.rebuild_due]
                self._rebuilding = bool(due)
                if not busy and not due:
                    self._indexer_wake.wait()
                    self._indexer_wake.clear()
                    continue
                quiet = time.monotonic() - self._last_write
                if self._wlock.locked() or quiet < INDEX_IDLE_S:
                    self._indexer_wake.wait(max(INDEX_IDLE_S - quiet, 0.005))  # close() sets it
                    self._indexer_wake.clear()
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
            self._rebuilding = False

    def pending_vectors(self) -> int:
        """Committed vectors not in their HNSW graph yet (searched exactly meanwhile)."""
        return sum(s.index.pending for s in list(self._sets.values()))

    def wait_indexed(self, timeout: float | None = None, rebuilds: bool = False) -> bool:
        """Block until every committed vector is in its graph (and, with `rebuilds`, until no graph
        rebuild is due or running); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout

        def busy() -> bool:
            if self.pending_vectors():
                return True
            if not rebuilds:
                return False
            return self._rebuilding or any(s.index.rebuild_due for s in list(self._sets.values()))

        while busy():
            if deadline is not None and time.monotonic() > deadline:
                return False
            self._wake_indexer()
            time.sleep(0.005)
        return True

    def _stop_indexer(self) -> None:
        self._indexer_stop = True
        self._indexer_wake.set()
        if self._indexer is not None:
            self._indexer.join()
            self._indexer = None

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
                    self._last_write = time.monotonic()
        return self._run(self._reader(), False, commands, names, blobs)

    def _run(
        self,
        conn: sqlite3.Connection,
        write: bool,
        commands: list[dict[str, Any]],
        names: list[str],
        blobs: Sequence[bytes | FileBlob],
    ) -> tuple[Any, list[bytes]]:
        tx = Tx(self, conn, write, blobs)
        if write:
            tx.first_new_id = self._next_id
        elif self.replica is None:
            tx.snap = self.cache.snapshot()  # before the first read: see readcache.py
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        if self.replica is not None:
            tx.snap = self.replica.follow(conn)  # the owner's changes up to this snapshot, applied
        results: list[dict[str, Any]] = []
        i = 0
        try:
            for idx, (cmd, name) in enumerate(zip(commands, names, strict=True)):
                i = idx
                results.append({name: cmds.run(tx, name, cmd[name])})
            if tx.blob_pos != len(blobs):
                i = len(commands) - 1
                raise QueryError(f"The query has {len(blobs)} blob(s) but its commands use {tx.blob_pos}")
            if write:
                tx.flush()
                conn.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('next_id', ?), ('next_conn_id', ?)",
                    (self._next_id, self._next_conn_id),
                )
                self.cache.invalidate(tx.touched)
                log_changes(conn, tx)
            conn.execute("COMMIT")
        except Exception as e:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if write:
                self.cache.committed()
            self.blob_files.remove(tx.new_files)
            if isinstance(e, QueryError):
                info = e.message
            else:
                log.exception("internal error in %s", names[i] if i < len(names) else "?")
                info = f"Internal error: {type(e).__name__}: {e}"
            return {"FailedCommand": {names[i]: commands[i][names[i]]}, "info": info, "status": -1}, []
        if write:
            self.cache.committed()
            self._apply(tx)
        return results, tx.out_blobs

    def _apply(self, tx: Tx) -> None:
        """After the commit: the in-memory set registry, FAISS indexes and dead blob files."""
        for name in tx.dropped_sets:
            s = self._sets.pop(name, None)
            if s is not None:
                self._sets_by_id.pop(s.id, None)
                for suffix in (".faiss", ".json"):
                    (self.vec_dir / f"{s.id}{suffix}").unlink(missing_ok=True)
        for s in tx.new_sets.values():
            self._sets[s.name] = s
            self._sets_by_id[s.id] = s
        for set_id, ids in tx.vec_removes.items():
            s = self._sets_by_id.get(set_id)
            if s is not None:
                s.index.remove(np.asarray(ids, dtype=np.int64))
        for set_id, (ids, vecs) in tx.vec_adds.items():
            s = self._sets_by_id.get(set_id)
            if s is not None:
                self._add_vectors(s.index, ids, vecs)
        self.blob_files.remove(tx.removed_files)

    # -- lifecycle ---------------------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Persist every changed vector index (also done by close())."""
        with self._wlock:
            for s in list(self._sets.values()):
                if s.index.dirty:
                    s.index.save(self.vec_dir, s.id)

    def close(self) -> None:
        """Stop the indexer, finish the tails (at most TAIL_MAX vectors per set), persist the indexes."""
        if self._closed:
            return
        self._stop_indexer()
        if self.replica is None:  # a replica's indexes are its own copies: nothing to keep
            for s in list(self._sets.values()):
                while s.index.drain(4096):
                    pass
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
