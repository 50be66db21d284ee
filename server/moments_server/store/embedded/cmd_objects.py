"""Entities, images, videos, clips and blobs: Add, Find, Update, Delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import jsonio
from .errors import QueryError
from .filters import Select, apply_filters
from .media import clip_inside, clip_range, in_range, probe_video
from .params import bool_param, json_ids, remove_props_param, results_spec
from .properties import encode_properties
from .responses import group_source, respond
from .rows import find_neighbours, find_rows
from .storage import CLASS_OF, VIDEO_CLIP
from .tx import Binding, binding_of
from .writes import delete_ids, exists_response, if_not_found, insert_object, rewrite_props

if TYPE_CHECKING:
    from .tx import Tx


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
    r = results_spec(body, cmd)
    cls = _cls_for(cmd, body)
    fast = find_neighbours(tx, body, cls)
    if fast is not None:
        group = group_source(tx, body, r, cmd)
        tx.bind(body, cmd, binding_of(fast, cls))
        return respond(tx, body, cmd, fast, r, group_by=group)
    sel = Select(cls)
    apply_filters(tx, body, cmd, sel)
    if cmd == "FindClip" and "video_ref" in body:
        b = tx.ref(body["video_ref"], cmd)
        sel.add(
            "o.id IN (SELECT c.dst FROM conns c WHERE c.cls=? AND c.src IN (SELECT value FROM json_each(?)))",
            [VIDEO_CLIP, json_ids(b.ids)],
        )
    if cmd == "FindClip":
        _in_range(tx, body, cmd, sel)
    group = group_source(tx, body, r, cmd)
    rows = find_rows(tx, sel, body, r, cmd)
    want_blobs = bool_param(body, "blobs", cmd)
    if want_blobs and cmd not in ("FindImage", "FindVideo", "FindBlob"):
        raise QueryError(f"{cmd}: blobs: true is not supported (only FindImage, FindVideo, FindBlob, FindDescriptor)")
    tx.bind(body, cmd, binding_of(rows, cls))
    return respond(tx, body, cmd, rows, r, want_blobs=want_blobs, group_by=group)


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
    sel.add("o.id IN (SELECT value FROM json_each(?))", [json_ids(keep)])


def add_object(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    if cmd == "AddEntity":
        cls = body.get("class")
        if not isinstance(cls, str) or not cls:
            raise QueryError("AddEntity: 'class' is required (a non-empty string)")
    else:
        cls = CLASS_OF[cmd[3:]]
    blob = tx.next_object_blob(cmd) if cmd in ("AddImage", "AddVideo", "AddBlob") else None
    props = encode_properties(body.get("properties"))
    found = if_not_found(tx, body, cmd, Select(cls))
    if found:
        tx.bind(body, cmd, Binding([row[0] for row in found], cls))
        return exists_response(cmd)
    if cmd == "AddVideo" and blob is not None:
        props.update(probe_video(blob))
    if cmd == "AddClip":
        if "video_ref" not in body:
            raise QueryError("AddClip: 'video_ref' is required")
        vb = tx.ref(body["video_ref"], cmd)
        if len(vb.ids) != 1 or not _all_class(tx, vb, "_Video"):
            raise QueryError(
                f"AddClip: video_ref must reference exactly one video (it references {len(vb.ids)} object(s))"
            )
        props.update(clip_range(body))
        rid = insert_object(tx, cls, props, body, cmd)
        tx.insert_connection(VIDEO_CLIP, vb.ids[0], rid, "{}")
    else:
        insert_object(tx, cls, props, body, cmd, blob=blob)
    return {"status": 0}


def _all_class(tx: Tx, b: Binding, cls: str) -> bool:
    if b.cls is not None:
        return b.cls == cls
    tx.flush()
    n = tx.conn.execute(
        "SELECT count(*) FROM objects WHERE cls=? AND id IN (SELECT value FROM json_each(?))",
        (cls, json_ids(b.ids)),
    ).fetchone()[0]
    return bool(n == len(b.ids))


def _matched_ids(tx: Tx, cmd: str, body: dict[str, Any], cls: str | None) -> list[int]:
    tx.flush()
    sel = Select(cls)
    if cmd == "DeleteDescriptor" and "set" in body:
        sel.add("o.set_id = ?", [tx.get_set(body["set"], cmd).id])
    apply_filters(tx, body, cmd, sel)
    return [r[0] for r in tx.conn.execute(f"SELECT o.id FROM objects o WHERE {sel.sql()} ORDER BY o.id", sel.params)]


def update_objects(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    cls = _cls_for(cmd, body)
    props = encode_properties(body.get("properties"))
    remove = remove_props_param(body, cmd)
    ids = _matched_ids(tx, cmd, body, cls)
    if ids and (props or remove):
        rows = tx.conn.execute(
            "SELECT id, props FROM objects WHERE id IN (SELECT value FROM json_each(?))", (json_ids(ids),)
        ).fetchall()
        rewrite_props(tx, "objects", rows, props, remove)
    return {"count": len(ids), "status": 0}


def delete_objects(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    cls = _cls_for(cmd, body)
    ids = _matched_ids(tx, cmd, body, cls)
    delete_ids(tx, ids)
    return {"count": len(ids), "status": 0}
