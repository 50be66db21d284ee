"""Entities, images, videos, clips and blobs (Add/Find/Update/Delete), and connections."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from . import jsonio
from .blobs import INLINE_MAX, FileBlob
from .constraints import compile_constraints, uid_of
from .errors import QueryError
from .media import clip_inside, clip_range, in_range, probe_video
from .model import Binding
from .query import (
    CLASS_OF,
    CONN,
    OBJ,
    ROW_COLS,
    VIDEO_CLIP,
    Select,
    _bind,
    _binding,
    _bool,
    _filters,
    _find_rows,
    _group_source,
    _ids_param,
    _int,
    _respond,
    _results,
    _sorted,
    _wants_props,
    find_neighbours,
)
from .values import decode_value, encode_properties

if TYPE_CHECKING:
    from .engine import Tx


def _cls_for(cmd: str, body: dict[str, Any], key: str = "with_class") -> str | None:
    kind = cmd[4:] if cmd.startswith("Find") else cmd[6:]  # Find*/Update*/Delete*
    if kind == "Entity":
        c = body.get(key)
        if c is not None and not isinstance(c, str):
            raise QueryError(f"{cmd}: '{key}' must be a string")
        return c
    return CLASS_OF[kind]


def find_objects(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    tx.flush()
    r = _results(body, cmd)
    cls = _cls_for(cmd, body)
    fast = find_neighbours(tx, body, cls)
    if fast is not None:
        group = _group_source(tx, body, r, cmd)
        _bind(tx, body, cmd, _binding_of(fast, cls))
        return _respond(tx, body, cmd, fast, r, group_by=group)
    sel = Select(cls)
    _filters(tx, body, cmd, sel)
    if cmd == "FindClip" and "video_ref" in body:
        b = _binding(tx, body["video_ref"], cmd)
        sel.add(
            "o.id IN (SELECT c.dst FROM conns c WHERE c.cls=? AND c.src IN (SELECT value FROM json_each(?)))",
            [VIDEO_CLIP, _ids_param(b.ids)],
        )
    if cmd == "FindClip":
        _in_range(tx, body, cmd, sel)
    group = _group_source(tx, body, r, cmd)
    rows = _find_rows(tx, sel, body, r, cmd)
    want_blobs = _bool(body, "blobs", cmd)
    if want_blobs and cmd not in ("FindImage", "FindVideo", "FindBlob"):
        raise QueryError(f"{cmd}: blobs: true is not supported (only FindImage, FindVideo, FindBlob, FindDescriptor)")
    _bind(tx, body, cmd, _binding_of(rows, cls))
    return _respond(tx, body, cmd, rows, r, want_blobs=want_blobs, group_by=group)


def _in_range(tx: Tx, body: dict[str, Any], cmd: str, sel: Any) -> None:
    """FindClip's in_*_range: keep the clips fully inside (the other filters have been applied to `sel`)."""
    want = in_range(body, cmd)
    if want is None:
        return
    rows = tx.conn.execute(
        f"SELECT o.id, o.props, (SELECT v.props FROM conns c JOIN objects v ON v.id = c.src "
        f"WHERE c.cls = ? AND c.dst = o.id LIMIT 1) FROM objects o WHERE {sel.sql()}",
        [VIDEO_CLIP, *sel.params],
    ).fetchall()
    keep = [
        rid
        for rid, props, vprops in rows
        if clip_inside(jsonio.loads(props), jsonio.loads(vprops) if vprops else None, want)
    ]
    sel.add("o.id IN (SELECT value FROM json_each(?))", [_ids_param(keep)])


def _binding_of(rows: list[tuple[Any, ...]], cls: str | None) -> Binding:

    if cls is None:
        classes = {row[1] for row in rows}
        cls = classes.pop() if len(classes) == 1 else None
    return Binding([row[0] for row in rows], cls)


def _connect(tx: Tx, new_id: int, spec: Any, cmd: str) -> None:
    if not isinstance(spec, dict):
        raise QueryError(f"{cmd}: connect must be an object")
    extra = set(spec) - {"ref", "class", "direction", "properties"}
    if extra:
        raise QueryError(f"{cmd}: connect: unsupported parameter {sorted(extra)[0]!r}")
    if "ref" not in spec:
        raise QueryError(f"{cmd}: connect needs 'ref'")
    b = _binding(tx, spec["ref"], cmd)
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
        tx.p_conns.append((tx.new_conn_id(), cc, src, dst, props))


def _if_not_found(tx: Tx, body: dict[str, Any], cmd: str, sel: Select) -> list[tuple[Any, ...]] | None:
    if "if_not_found" not in body:
        return None
    tx.flush()
    sql, params = compile_constraints(body["if_not_found"], "o", OBJ)
    sel.add(sql, params)
    rows = tx.conn.execute(f"SELECT {ROW_COLS} FROM objects o WHERE {sel.sql()} ORDER BY o.id", sel.params)
    found = rows.fetchall()
    return found or None


def _exists(cmd: str) -> dict[str, Any]:
    return {"info": "Image exists!" if cmd == "AddImage" else "Object Exists!", "status": 2}


def _insert_object(
    tx: Tx,
    cls: str,
    props: dict[str, Any],
    body: dict[str, Any],
    cmd: str,
    blob: bytes | FileBlob | None = None,
    set_id: int | None = None,
    label: str | None = None,
) -> int:

    rid = tx.new_id()
    tx.p_objects.append((rid, cls, jsonio.dumps(props), set_id, label))
    if blob is not None:
        if len(blob) <= INLINE_MAX:
            tx.p_blobdata.append((rid, blob.read() if isinstance(blob, FileBlob) else blob, None))
        else:
            name = tx.engine.blob_files.write(blob)
            tx.new_files.append(name)
            tx.p_blobdata.append((rid, None, name))
    if "connect" in body:
        _connect(tx, rid, body["connect"], cmd)
    _bind(tx, body, cmd, Binding([rid], cls))
    return rid


def add_object(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:

    if cmd == "AddEntity":
        cls = body.get("class")
        if not isinstance(cls, str) or not cls:
            raise QueryError("AddEntity: 'class' is required (a non-empty string)")
    else:
        cls = CLASS_OF[cmd[3:]]
    blob = tx.next_object_blob(cmd) if cmd in ("AddImage", "AddVideo", "AddBlob") else None
    props = encode_properties(body.get("properties"))
    found = _if_not_found(tx, body, cmd, Select(cls))
    if found:
        _bind(tx, body, cmd, Binding([row[0] for row in found], cls))
        return _exists(cmd)
    if cmd == "AddVideo" and blob is not None:
        props.update(probe_video(blob))
    if cmd == "AddClip":
        if "video_ref" not in body:
            raise QueryError("AddClip: 'video_ref' is required")
        vb = _binding(tx, body["video_ref"], cmd)
        if len(vb.ids) != 1 or not _all_class(tx, vb, "_Video"):
            raise QueryError(
                f"AddClip: video_ref must reference exactly one video (it references {len(vb.ids)} object(s))"
            )
        props.update(clip_range(body))
        rid = _insert_object(tx, cls, props, body, cmd)
        tx.p_conns.append((tx.new_conn_id(), VIDEO_CLIP, vb.ids[0], rid, "{}"))
    else:
        _insert_object(tx, cls, props, body, cmd, blob=blob)
    return {"status": 0}


def _all_class(tx: Tx, b: Binding, cls: str) -> bool:
    if b.cls is not None:
        return b.cls == cls
    tx.flush()
    n = tx.conn.execute(
        "SELECT count(*) FROM objects WHERE cls=? AND id IN (SELECT value FROM json_each(?))",
        (cls, _ids_param(b.ids)),
    ).fetchone()[0]
    return bool(n == len(b.ids))


def _matched_ids(tx: Tx, cmd: str, body: dict[str, Any], cls: str | None) -> list[int]:
    tx.flush()
    sel = Select(cls)
    if cmd == "DeleteDescriptor" and "set" in body:
        sel.add("o.set_id = ?", [tx.get_set(body["set"], cmd).id])
    _filters(tx, body, cmd, sel)
    return [r[0] for r in tx.conn.execute(f"SELECT o.id FROM objects o WHERE {sel.sql()} ORDER BY o.id", sel.params)]


def update_objects(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    cls = _cls_for(cmd, body)
    props = encode_properties(body.get("properties"))
    remove = body.get("remove_props", [])
    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
        raise QueryError(f"{cmd}: remove_props must be an array of property names")
    if any(k.startswith("_") for k in remove):
        raise QueryError(f"{cmd}: remove_props cannot remove reserved properties")
    ids = _matched_ids(tx, cmd, body, cls)
    if ids and (props or remove):
        rows = tx.conn.execute(
            "SELECT id, props FROM objects WHERE id IN (SELECT value FROM json_each(?))", (_ids_param(ids),)
        ).fetchall()
        _rewrite_props(tx, "objects", rows, props, remove)
    return {"count": len(ids), "status": 0}


def _rewrite_props(tx: Tx, table: str, rows: list[tuple[int, str]], props: dict[str, Any], remove: list[str]) -> None:
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
    p = _ids_param(ids)
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
        tx.dropped_sets.add(json.loads(pj)["_name"])
        tx.new_sets = {k: v for k, v in tx.new_sets.items() if v.id != sid}
        members += [r[0] for r in c.execute("SELECT id FROM vectors WHERE set_id=?", (sid,))]
        tx.vec_adds.pop(sid, None)
    all_ids = sorted(set(ids) | set(clips) | set(members))
    p = _ids_param(all_ids)
    gone: set[int] = set()
    for rid, sid in c.execute("SELECT id, set_id FROM vectors WHERE id IN (SELECT value FROM json_each(?))", (p,)):
        tx.vec_removes.setdefault(sid, []).append(rid)
        gone.add(rid)
    for sid, (add_ids, add_vecs) in list(tx.vec_adds.items()):  # added earlier in this same query
        if gone.intersection(add_ids):
            keep = [(i, v) for i, v in zip(add_ids, add_vecs, strict=True) if i not in gone]
            tx.vec_adds[sid] = ([i for i, _ in keep], [v for _, v in keep])
    tx.removed_files += [
        r[0]
        for r in c.execute(
            "SELECT file FROM blobdata WHERE file IS NOT NULL AND id IN (SELECT value FROM json_each(?))", (p,)
        )
    ]
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


def delete_objects(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    cls = _cls_for(cmd, body)
    ids = _matched_ids(tx, cmd, body, cls)
    delete_ids(tx, ids)
    return {"count": len(ids), "status": 0}


# -- connections -------------------------------------------------------------------------------------


def add_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:

    cc = body.get("class")
    if not isinstance(cc, str) or not cc:
        raise QueryError("AddConnection: 'class' is required (a non-empty string)")
    if "src" not in body or "dst" not in body:
        raise QueryError("AddConnection: 'src' and 'dst' references are required")
    src = _binding(tx, body["src"], cmd)
    dst = _binding(tx, body["dst"], cmd)
    props = encode_properties(body.get("properties"))
    if "if_not_found" in body:
        tx.flush()
        sql, params = compile_constraints(body["if_not_found"], "c", CONN)
        found = tx.conn.execute(
            f"SELECT c.id FROM conns c WHERE c.cls=? AND c.src IN (SELECT value FROM json_each(?)) "
            f"AND c.dst IN (SELECT value FROM json_each(?)) AND {sql}",
            [cc, _ids_param(src.ids), _ids_param(dst.ids), *params],
        ).fetchall()
        if found:
            _bind(tx, body, cmd, Binding([r[0] for r in found], cc, conns=True))
            return _exists(cmd)
    pj = jsonio.dumps(props)
    new = []
    for s in src.ids:
        for d in dst.ids:
            cid = tx.new_conn_id()
            tx.p_conns.append((cid, cc, s, d, pj))
            new.append(cid)
    _bind(tx, body, cmd, Binding(new, cc, conns=True))
    return {"status": 0}


def _conn_select(tx: Tx, body: dict[str, Any], cmd: str) -> tuple[str, list[Any]]:
    tx.flush()
    where, params = ["1"], []
    wc = body.get("with_class")
    if wc is not None:
        if not isinstance(wc, str):
            raise QueryError(f"{cmd}: 'with_class' must be a string")
        where.append("c.cls = ?")
        params.append(wc)
    if "constraints" in body:
        sql, ps = compile_constraints(body["constraints"], "c", CONN)
        where.append(sql)
        params += ps
    for key, col in (("src", "c.src"), ("dst", "c.dst")):
        if key in body:
            b = _binding(tx, body[key], cmd)
            where.append(f"{col} IN (SELECT value FROM json_each(?))")
            params.append(_ids_param(b.ids))
    for key in ("ref", "_ref") if cmd != "FindConnection" else ():
        if key in body:
            b = _binding(tx, body[key], cmd)
            if not b.conns:
                raise QueryError(f"{cmd}: reference {body[key]} does not name connections")
            where.append("c.id IN (SELECT value FROM json_each(?))")
            params.append(_ids_param(b.ids))
    return " AND ".join(where), params


def find_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:

    r = _results(body, cmd)
    if "group" in r:
        raise QueryError(f"{cmd}: results: unsupported parameter 'group'")
    where, params = _conn_select(tx, body, cmd)
    q = f"SELECT c.id, c.cls, c.props, c.src, c.dst FROM conns c WHERE {where} ORDER BY c.id"
    limit = _int(body, "limit", cmd, r.get("limit"))
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    rows = tx.conn.execute(q, params).fetchall()
    _bind(tx, body, cmd, Binding([row[0] for row in rows], body.get("with_class"), conns=True))
    resp: dict[str, Any] = {"status": 0}
    if r.get("count"):
        resp["count"] = len(rows)
    out = []
    if _wants_props(r) or body.get("uniqueids"):
        for cid, _cls, pj, _s, _d in rows:
            props = jsonio.loads(pj)
            e: dict[str, Any] = {}
            if r.get("all_properties"):
                e = {k: decode_value(v) for k, v in props.items()}
                e["_uniqueid"] = uid_of(CONN, cid)
            else:
                for k in r.get("list", []):
                    if k == "_uniqueid":
                        e[k] = uid_of(CONN, cid)
                    elif k in props:
                        e[k] = decode_value(props[k])
            if body.get("uniqueids"):
                e["_uniqueid"] = uid_of(CONN, cid)
            out.append(_sorted(e))
    if out:
        resp["connections"] = out
    resp["returned"] = len(out)
    return _sorted(resp)


def update_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    props = encode_properties(body.get("properties"))
    remove = body.get("remove_props", [])
    where, params = _conn_select(tx, body, cmd)
    rows = tx.conn.execute(f"SELECT c.id, c.props FROM conns c WHERE {where}", params).fetchall()
    _rewrite_props(tx, "conns", rows, props, remove)
    return {"count": len(rows), "status": 0}


def delete_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    where, params = _conn_select(tx, body, cmd)
    ends = tx.conn.execute(
        f"DELETE FROM conns WHERE id IN (SELECT c.id FROM conns c WHERE {where}) RETURNING src, dst", params
    ).fetchall()
    tx.touch(i for pair in ends for i in pair)
    return {"count": len(ends), "status": 0}
