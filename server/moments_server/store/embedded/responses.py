"""The response of a Find: entities (properties, list, uniqueids), blobs, count, groups, and
group_by_source."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import jsonio
from .constraints import uid_of
from .errors import QueryError
from .params import bool_param, json_ids, sorted_keys, wants_props
from .properties import decode_value
from .rows import decoded_props, fetch_edges
from .storage import OBJ

if TYPE_CHECKING:
    from .tx import Binding, Tx


def _groups(rows: list[tuple[Any, ...]], keys: list[str]) -> list[dict[str, Any]]:
    """results.group: one entry per distinct combination of the keys' values, in order of first appearance,
    with `_group_count` (SEMANTICS.md 8). A missing property groups as null."""
    counts: dict[str, dict[str, Any]] = {}
    for row in rows:
        props = jsonio.loads(row[2])
        values = {k: decode_value(props[k]) if k in props else None for k in keys}
        ident = jsonio.dumps([values[k] for k in keys])
        entry = counts.setdefault(ident, {**values, "_group_count": 0})
        entry["_group_count"] += 1
    return [sorted_keys(e) for e in counts.values()]


HIDDEN_SET_KEYS = {"_dimensions", "_engines", "_metrics"}


def _entity(tx: Tx, row: tuple[Any, ...], r: dict[str, Any]) -> dict[str, Any]:
    rid, cls, props_json, set_id, label = row
    props = tx.decoded.get(rid)
    if props is None:
        props = decoded_props(props_json)
    out: dict[str, Any]
    if r.get("all_properties"):
        hidden = HIDDEN_SET_KEYS if cls == "_DescriptorSet" else ()
        out = {k: v for k, v in props.items() if k not in hidden}
        out["_uniqueid"] = uid_of(OBJ, rid)
        if cls == "_Descriptor":
            out["_set_name"] = tx.set_name_of(set_id)
    elif "list" in r:
        out = {}
        for k in r["list"]:
            if k == "_uniqueid":
                out[k] = uid_of(OBJ, rid)
            elif k == "_set_name" and cls == "_Descriptor":
                out[k] = tx.set_name_of(set_id)
            elif k == "_label" and cls == "_Descriptor":
                out[k] = label if label is not None else "None"
            elif k in props:
                out[k] = props[k]
    else:
        out = {}
    return out


def respond(
    tx: Tx,
    body: dict[str, Any],
    cmd: str,
    rows: list[tuple[Any, ...]],
    r: dict[str, Any],
    extra: dict[int, dict[str, Any]] | None = None,
    want_blobs: bool = False,
    blob_fn: Callable[[tuple[Any, ...]], bytes | None] | None = None,
    force_entities: bool = False,
    group_by: Binding | None = None,
) -> dict[str, Any]:
    resp: dict[str, Any] = {"status": 0}
    if r.get("count"):
        resp["count"] = len(rows)
    if r.get("group"):
        resp["groups"] = _groups(rows, r["group"])
    entities: list[dict[str, Any]] = []
    if "uniqueids" in body:
        bool_param(body, "uniqueids", cmd)
    emit = wants_props(r) or force_entities or want_blobs or bool(body.get("uniqueids"))
    if emit and rows:
        start = tx.blobs_emitted
        for row in rows:
            e = _entity(tx, row, r)
            if body.get("uniqueids"):
                e["_uniqueid"] = uid_of(OBJ, row[0])
            if extra and row[0] in extra:
                e.update(extra[row[0]])
            if want_blobs:
                data = blob_fn(row) if blob_fn else tx.read_blob(row[0])
                if data is not None:
                    e["_blob_index"] = tx.emit_blob(data)
            entities.append(sorted_keys(e))
        if want_blobs and tx.blobs_emitted > start:
            resp["blobs_start"] = start
    if entities and group_by is not None:
        resp["entities"] = _group(tx, group_by, rows, entities)
        resp["group_by_source"] = True
    elif entities:
        resp["entities"] = entities
    resp["returned"] = len(entities)
    if body.get("unique") and len(rows) > 1:
        resp["status"] = 3
        resp["info"] = f"{cmd}: {len(rows)} objects matched but unique was requested"
    return sorted_keys(resp)


def _group(tx: Tx, src: Binding, rows: list[tuple[Any, ...]], ents: list[dict[str, Any]]) -> dict[str, Any]:
    by_id = {row[0]: e for row, e in zip(rows, ents, strict=True)}
    res_ids = json_ids(list(by_id))
    pairs: dict[int, list[int]] = {s: [] for s in src.ids}
    if tx.snap is not None and src.cls != "_DescriptorSet":
        # connected through any class, either way; each source's results in id order
        edges = fetch_edges(tx, list(pairs))
        for s in pairs:
            pairs[s] = sorted({other for other, _, _ in edges.get(s, ()) if other in by_id})
        found: list[Any] = []
    elif src.cls == "_DescriptorSet":
        ph = ",".join("?" * len(by_id))
        q = f"SELECT set_id, id FROM objects WHERE id IN ({ph}) ORDER BY id"
        found = tx.conn.execute(q, list(by_id)).fetchall()
    else:
        src_ids = json_ids(src.ids)
        found = tx.conn.execute(
            "SELECT c.src, c.dst FROM conns c WHERE c.src IN (SELECT value FROM json_each(?)) "
            "AND c.dst IN (SELECT value FROM json_each(?)) UNION ALL "
            "SELECT c.dst, c.src FROM conns c WHERE c.dst IN (SELECT value FROM json_each(?)) "
            "AND c.src IN (SELECT value FROM json_each(?)) ORDER BY 2",
            (src_ids, res_ids, src_ids, res_ids),
        ).fetchall()
    for s, d in found:
        if s in pairs and d not in pairs[s]:
            pairs[s].append(d)
    return {uid_of(OBJ, s): [by_id[d] for d in ds] for s, ds in pairs.items() if ds}


def group_source(tx: Tx, body: dict[str, Any], r: dict[str, Any], cmd: str) -> Binding | None:
    if not (body.get("group_by_source") or r.get("group_by_source")):
        return None
    if r.get("count"):
        raise QueryError(f"{cmd}: group_by_source cannot be combined with count")
    spec = body.get("is_connected_to")
    if isinstance(spec, dict) and "ref" in spec:
        return tx.ref(spec["ref"], cmd)
    if "video_ref" in body:
        return tx.ref(body["video_ref"], cmd)
    raise QueryError(f"{cmd}: group_by_source needs is_connected_to with a single ref, or video_ref")
