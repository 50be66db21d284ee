"""One query's transaction, as the command handlers see it (`Tx`), and the `_ref` bindings it holds.

Handlers read with SQL on `tx.conn` (the transaction's connection: a reader's WAL snapshot, or the
writer inside `BEGIN IMMEDIATE`) and change the store only through the methods here: inserts are
buffered and flushed with `executemany` before anything in the transaction reads (`flush`) and at
commit; vector, set and blob-file changes are recorded here and applied by the engine after the COMMIT
(`apply_committed`), so a rolled-back query leaves the FAISS indexes and the files as they were.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..file_blob import FileBlob
from .blobs import INLINE_MAX, BlobFiles
from .errors import QueryError
from .readcache import ReadCache
from .sets import SetInfo, SetRegistry
from .storage import IdAllocator, ensure_sql_index
from .vectors import HnswParams


@dataclass
class Binding:
    """What a `_ref` names: object ids (in result order) and their class when known."""

    ids: list[int]
    cls: str | None
    conns: bool = False


def binding_of(rows: list[tuple[Any, ...]], cls: str | None) -> Binding:
    """The binding of object rows (storage.ROW_COLS); their class when `cls` is None and all share one."""
    if cls is None:
        classes = {row[1] for row in rows}
        cls = classes.pop() if len(classes) == 1 else None
    return Binding([row[0] for row in rows], cls)


class Tx:
    def __init__(
        self,
        conn: sqlite3.Connection,
        blobs_in: Sequence[bytes | FileBlob],
        sets: SetRegistry,
        blob_files: BlobFiles,
        cache: ReadCache,
        ids: IdAllocator | None = None,
        snap: int | None = None,
        begun: bool = True,
    ) -> None:
        """`ids`: the allocator for a write transaction (None: a reader); `snap`: a reader's read-cache
        generation (readcache.py; None for writers, which never use the cache); `begun`: False for a reader
        whose BEGIN waits for its first SQL (`conn`)."""
        self._conn = conn
        self.begun = begun
        self.snap = snap
        self.cache = cache  # the engine's read cache (rows.py), for readers with a `snap`
        # Decoded properties of rows read through the read cache, for the response builder.
        self.decoded: dict[int, dict[str, Any]] = {}
        self.out_blobs: list[bytes] = []
        # Writers: existing objects whose row or connections change (the read cache forgets them at
        # commit); ids from first_new_id on were made by this transaction and are in no cache.
        self.touched: set[int] = set()
        self._ids = ids
        self.first_new_id = ids.next_id if ids is not None else 0
        self._sets = sets
        self._blob_files = blob_files
        self._blobs_in = blobs_in
        self._blob_pos = 0
        self._refs: dict[int, Binding] = {}
        self._objects: list[tuple[Any, ...]] = []
        self._conns: list[tuple[Any, ...]] = []
        self._vectors: list[tuple[Any, ...]] = []
        self._blobdata: list[tuple[Any, ...]] = []
        self._new_files: list[str] = []
        self._removed_files: list[str] = []
        self._vec_adds: dict[int, tuple[list[int], list[bytes]]] = {}
        self._vec_removes: dict[int, list[int]] = {}
        self._new_sets: dict[str, SetInfo] = {}
        self._dropped_sets: set[str] = set()

    @property
    def conn(self) -> sqlite3.Connection:
        """The transaction's connection; a reader's deferred BEGIN is issued on first use.

        A search answered from the read cache and the vector index reads no SQL at all; under 64 search
        clients (shapes-demo, 2 cores) the BEGIN and COMMIT of such reads were 9.6 % of the server's
        samples, most of it waiting to take the GIL back after sqlite3 released it. SQLite takes a
        deferred transaction's WAL snapshot at its first read, not at BEGIN, so beginning on first use
        changes no reader's view of the store.
        """
        if not self.begun:
            self._conn.execute("BEGIN")
            self.begun = True
        return self._conn

    # -- the query's blobs -------------------------------------------------------------------------

    @property
    def blobs_used(self) -> int:
        return self._blob_pos

    def next_blob(self, cmd: str) -> bytes:
        if self._blob_pos >= len(self._blobs_in):
            raise QueryError(f"{cmd}: expects a blob but the query has only {len(self._blobs_in)} blob(s)")
        b = self._blobs_in[self._blob_pos]
        self._blob_pos += 1
        if isinstance(b, FileBlob):
            return b.read()
        return b if type(b) is bytes else bytes(b)

    def next_object_blob(self, cmd: str) -> bytes | FileBlob:
        """An image's, video's or blob's data: a FileBlob stays a file (BlobFiles.write copies it)."""
        if self._blob_pos < len(self._blobs_in) and isinstance(self._blobs_in[self._blob_pos], FileBlob):
            b = self._blobs_in[self._blob_pos]
            self._blob_pos += 1
            return b
        return self.next_blob(cmd)

    def emit_blob(self, data: bytes) -> int:
        """Append a blob to the response; -> its index among the response's blobs."""
        self.out_blobs.append(data)
        return len(self.out_blobs) - 1

    @property
    def blobs_emitted(self) -> int:
        return len(self.out_blobs)

    # -- references --------------------------------------------------------------------------------

    def ref(self, ref: Any, cmd: str) -> Binding:
        """What `ref` (a command's `ref`, `src`, `video_ref`, ...) names; QueryError when it names nothing."""
        if not isinstance(ref, int) or isinstance(ref, bool):
            raise QueryError(f"{cmd}: a reference must be an integer, got {ref!r}")
        b = self._refs.get(ref)
        if b is None:
            raise QueryError(f"{cmd}: Reference does not exist: {ref}")
        return b

    def peek_ref(self, ref: Any) -> Binding | None:
        """What `ref` names, or None (no error: a caller that words its own)."""
        return self._refs.get(ref) if isinstance(ref, int) and not isinstance(ref, bool) else None

    def bind(self, body: dict[str, Any], cmd: str, b: Binding) -> None:
        """Bind the command's `_ref`, when it has one, to `b`."""
        if "_ref" in body:
            ref = body["_ref"]
            if not isinstance(ref, int) or isinstance(ref, bool) or ref < 1:
                raise QueryError(f"{cmd}: '_ref' must be a positive integer, got {ref!r}")
            if ref in self._refs:
                raise QueryError(f"{cmd}: _ref {ref} is already used in this query")
            self._refs[ref] = b

    # -- writes ------------------------------------------------------------------------------------

    def insert_object(self, cls: str, props_json: str, set_id: int | None = None, label: str | None = None) -> int:
        """-> the new object's id (the row is written at the next flush)."""
        assert self._ids is not None, "a read-only transaction"
        rid = self._ids.new_id()
        self._objects.append((rid, cls, props_json, set_id, label))
        return rid

    def store_blob(self, rid: int, blob: bytes | FileBlob) -> None:
        """Object `rid`'s data: inline when small, else a file (removed again if the query fails)."""
        if len(blob) <= INLINE_MAX:
            self._blobdata.append((rid, blob.read() if isinstance(blob, FileBlob) else blob, None))
        else:
            name = self._blob_files.write(blob)
            self._new_files.append(name)
            self._blobdata.append((rid, None, name))

    def read_blob(self, rid: int) -> bytes | None:
        row = self.conn.execute("SELECT data, file FROM blobdata WHERE id=?", (rid,)).fetchone()
        if row is None:
            return None
        data, fname = row
        if data is not None:
            return bytes(data)
        return self._blob_files.read(fname)

    def insert_connection(self, cls: str, src: int, dst: int, props_json: str) -> int:
        assert self._ids is not None, "a read-only transaction"
        cid = self._ids.new_conn_id()
        self._conns.append((cid, cls, src, dst, props_json))
        return cid

    def add_vector(self, set_id: int, rid: int, vec: bytes) -> None:
        """Descriptor `rid`'s float32 vector (SQLite now, the set's index after the commit)."""
        self._vectors.append((rid, set_id, vec))
        ids, vecs = self._vec_adds.setdefault(set_id, ([], []))
        ids.append(rid)
        vecs.append(vec)

    def remove_vectors(self, rows: Iterable[tuple[int, int]]) -> None:
        """Vectors (id, set id) being deleted: from their set's index after the commit, and from what this
        query added before."""
        gone: set[int] = set()
        for rid, sid in rows:
            self._vec_removes.setdefault(sid, []).append(rid)
            gone.add(rid)
        for sid, (add_ids, add_vecs) in list(self._vec_adds.items()):
            if gone.intersection(add_ids):
                keep = [(i, v) for i, v in zip(add_ids, add_vecs, strict=True) if i not in gone]
                self._vec_adds[sid] = ([i for i, _ in keep], [v for _, v in keep])

    def remove_blob_files(self, names: Iterable[str]) -> None:
        """Blob files of deleted objects: removed once the deletion is committed."""
        self._removed_files.extend(names)

    def create_set(
        self, set_id: int, name: str, dims: int, metrics: list[str], engines: list[str], hnsw: HnswParams | None
    ) -> None:
        """Descriptor set `set_id` (its object inserted): searchable in this query, registered at commit."""
        index = self._sets.new_index(dims, metrics[0], engines[0], hnsw)
        self._new_sets[name] = SetInfo(set_id, name, dims, metrics[0], metrics, engines, index)
        self._dropped_sets.discard(name)

    def drop_set(self, set_id: int, name: str) -> None:
        self._dropped_sets.add(name)
        self._new_sets = {k: v for k, v in self._new_sets.items() if v.id != set_id}
        self._vec_adds.pop(set_id, None)

    def ensure_index(self, table: str, prop: str) -> None:
        """An SQLite index on property `prop` of `table` ('objects' or 'conns')."""
        ensure_sql_index(self.conn, table, prop)

    def touch(self, ids: Iterable[int]) -> None:
        """Existing objects whose row or connections changed (the read cache forgets them at commit)."""
        first = self.first_new_id
        self.touched.update(i for i in ids if i < first)

    def flush(self) -> None:
        """Write the buffered inserts (before anything in the transaction reads, and at commit)."""
        if not (self._objects or self._conns or self._vectors or self._blobdata):
            return  # nothing buffered (a reader always): no connection, so no BEGIN
        c = self.conn
        if self._objects:
            c.executemany("INSERT INTO objects VALUES (?,?,?,?,?)", self._objects)
            self._objects.clear()
        if self._conns:
            c.executemany("INSERT INTO conns VALUES (?,?,?,?,?)", self._conns)
            self.touch(i for conn in self._conns for i in (conn[2], conn[3]))  # an existing object's edges
            self._conns.clear()
        if self._vectors:
            c.executemany("INSERT INTO vectors VALUES (?,?,?)", self._vectors)
            self._vectors.clear()
        if self._blobdata:
            c.executemany("INSERT INTO blobdata VALUES (?,?,?)", self._blobdata)
            self._blobdata.clear()

    # -- descriptor sets as this transaction sees them ----------------------------------------------

    def get_set(self, name: Any, cmd: str) -> SetInfo:
        if not isinstance(name, str):
            raise QueryError(f"{cmd}: 'set' must be a string")
        s = self._new_sets.get(name)
        if s is None and name not in self._dropped_sets:
            s = self._sets.by_name.get(name)
        if s is None:
            raise QueryError(f"{cmd}: DescriptorSet {name!r} does not exist")
        return s

    def set_name_of(self, set_id: int) -> str:
        for s in self._new_sets.values():
            if s.id == set_id:
                return s.name
        known = self._sets.by_id.get(set_id)
        return known.name if known else ""

    def set_has_pending(self, set_id: int) -> bool:
        """Whether this query changed the set's vectors (its index does not show them yet)."""
        return set_id in self._vec_adds or set_id in self._vec_removes

    # -- commit (the engine) -------------------------------------------------------------------------

    @property
    def removed_vectors(self) -> dict[int, list[int]]:
        return self._vec_removes

    @property
    def sets_changed(self) -> bool:
        return bool(self._new_sets or self._dropped_sets)

    def discard(self) -> None:
        """After a rollback: the blob files this transaction wrote."""
        self._blob_files.remove(self._new_files)

    def apply_committed(self) -> None:
        """After the commit: the set registry, FAISS indexes and dead blob files."""
        self._sets.drop(self._dropped_sets)
        self._sets.register(self._new_sets.values())
        for set_id, ids in self._vec_removes.items():
            self._sets.remove(set_id, ids)
        for set_id, (ids, vecs) in self._vec_adds.items():
            self._sets.add(set_id, ids, vecs)
        self._blob_files.remove(self._removed_files)
