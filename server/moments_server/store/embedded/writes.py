"""What the Add, Update and Delete handlers share: inserting an object (its blob, its `connect`), the
conditional add (`if_not_found`), property rewrites, and deletion with its cascades."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ..file_blob import FileBlob
from . import jsonio
from .constraints import compile_constraints
from .errors import QueryError
from .filters import Select
from .params import check_keys, json_ids
from .properties import encode_properties
from .storage import OBJ, ROW_COLS, VIDEO_CLIP
from .tx import Binding

if TYPE_CHECKING:
    from .tx import Tx


def _connect(tx: Tx, new_id: int, spec: Any, cmd: str) -> None:
    if not isinstance(spec, dict):
        raise QueryError(f"{cmd}: connect must be an object")
    check_keys(spec, {"ref", "class", "direction", "properties"}, f"{cmd}: connect")
    if "ref" not in spec:
        raise QueryError(f"{cmd}: connect needs 'ref'")
    b = tx.ref(spec["ref"], cmd)
    cc = spec.get("class")
    if cc is None:
        raise QueryError(f"{cmd}: connect needs 'class'")
    if not isinstance(cc, str) or not cc:
        raise QueryError(f"{cmd}: connect.class must be a non-empty string")
    direction = spec.get("direction", "out")
    if direction not in ("in", "out"):
        raise QueryError(f"{cmd}: connect.direction must be 'in' or 'out', got {direction!r}")
    props = jsonio.dumps(encode_properties(spec["properties"])) if "properties" in spec else "{}"
    for other in b.ids:
        src, dst = (new_id, other) if direction == "out" else (other, new_id)
        tx.insert_connection(cc, src, dst, props)


def if_not_found(tx: Tx, body: dict[str, Any], cmd: str, sel: Select) -> list[tuple[Any, ...]] | None:
    if "if_not_found" not in body:
        return None
    tx.flush()
    sql, params = compile_constraints(body["if_not_found"], "o", OBJ)
    sel.add(sql, params)
    rows = tx.conn.execute(f"SELECT {ROW_COLS} FROM objects o WHERE {sel.sql()} ORDER BY o.id", sel.params)
    found = rows.fetchall()
    return found or None


def exists_response(cmd: str) -> dict[str, Any]:
    return {"info": "Image exists!" if cmd == "AddImage" else "Object Exists!", "status": 2}


def insert_object(
    tx: Tx,
    cls: str,
    props: dict[str, Any],
    body: dict[str, Any],
    cmd: str,
    blob: bytes | FileBlob | None = None,
    set_id: int | None = None,
    label: str | None = None,
) -> int:
    """The new object's id; its blob stored, its `connect` made, its `_ref` bound."""
    rid = tx.insert_object(cls, jsonio.dumps(props), set_id, label)
    if blob is not None:
        tx.store_blob(rid, blob)
    if "connect" in body:
        _connect(tx, rid, body["connect"], cmd)
    tx.bind(body, cmd, Binding([rid], cls))
    return rid


def rewrite_props(tx: Tx, table: str, rows: list[tuple[int, str]], props: dict[str, Any], remove: list[str]) -> None:
    """Update*/UpdateConnection: drop `remove`, then set `props`, on each (id, props JSON) row of `table`."""
    upd = []
    for rid, pj in rows:
        p = jsonio.loads(pj)
        for k in remove:
            p.pop(k, None)
        p.update(props)
        upd.append((jsonio.dumps(p), rid))
    tx.conn.executemany(f"UPDATE {table} SET props=? WHERE id=?", upd)
    if table == "objects":
        tx.touch(rid for rid, _ in rows)


def delete_ids(tx: Tx, ids: list[int]) -> None:
    """Delete objects with their cascades: connections, a video's clips, a set's descriptors."""
    if not ids:
        return
    c = tx.conn
    p = json_ids(ids)
    clips = [
        r[0]
        for r in c.execute(
            "SELECT c.dst FROM conns c JOIN objects o ON o.id=c.src WHERE c.cls=? AND o.cls='_Video' "
            "AND c.src IN (SELECT value FROM json_each(?))",
            (VIDEO_CLIP, p),
        )
    ]
    sets = c.execute(
        "SELECT id, props FROM objects WHERE cls='_DescriptorSet' AND id IN (SELECT value FROM json_each(?))",
        (p,),
    ).fetchall()
    members: list[int] = []
    for sid, pj in sets:
        tx.drop_set(sid, json.loads(pj)["_name"])
        members += [r[0] for r in c.execute("SELECT id FROM vectors WHERE set_id=?", (sid,))]
    all_ids = sorted(set(ids) | set(clips) | set(members))
    p = json_ids(all_ids)
    tx.remove_vectors(c.execute("SELECT id, set_id FROM vectors WHERE id IN (SELECT value FROM json_each(?))", (p,)))
    tx.remove_blob_files(
        r[0]
        for r in c.execute(
            "SELECT file FROM blobdata WHERE file IS NOT NULL AND id IN (SELECT value FROM json_each(?))", (p,)
        )
    )
    for q in (
        "DELETE FROM vectors WHERE id IN (SELECT value FROM json_each(?))",
        "DELETE FROM blobdata WHERE id IN (SELECT value FROM json_each(?))",
        "DELETE FROM objects WHERE id IN (SELECT value FROM json_each(?))",
    ):
        c.execute(q, (p,))
    tx.touch(all_ids)
    # the objects on the other side of the removed connections lose an edge
    for end, other in (("src", "dst"), ("dst", "src")):
        q = f"DELETE FROM conns WHERE {end} IN (SELECT value FROM json_each(?)) RETURNING {other}"
        tx.touch(r[0] for r in c.execute(q, (p,)))
