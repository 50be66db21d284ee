"""Descriptor sets and descriptors: add, find (kNN, filtered kNN), delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import jsonio
from .constraints import prop_expr
from .errors import QueryError
from .filters import Select, apply_filters
from .knn import knn
from .params import bool_param, int_param, json_ids, results_spec, sort_spec, sorted_keys
from .properties import encode_properties
from .responses import group_source, respond
from .rows import fetch_rows, find_rows
from .tx import Binding, binding_of
from .vectors import FLAT_ENGINES, HNSW_ENGINES, METRICS, HnswParams
from .writes import delete_ids, exists_response, if_not_found, insert_object

if TYPE_CHECKING:
    from .tx import Tx


def _list_param(v: Any, allowed: set[str], what: str, default: str) -> list[str]:
    if v is None:
        v = [default]
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
        raise QueryError(f"AddDescriptorSet: '{what}' must be a string or an array of strings")
    for x in v:
        if x not in allowed:
            raise QueryError(f"AddDescriptorSet: unsupported {what} {x!r} (supported: {sorted(allowed)})")
    return list(v)


def add_descriptor_set(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise QueryError("AddDescriptorSet: 'name' is required (a non-empty string)")
    dims = int_param(body, "dimensions", cmd, minimum=1)
    if dims is None:
        raise QueryError("AddDescriptorSet: 'dimensions' is required")
    metrics = _list_param(body.get("metric"), METRICS, "metric", "L2")
    engines = _list_param(body.get("engine"), FLAT_ENGINES | HNSW_ENGINES, "engine", "Flat")
    # One index per set: the first metric/engine is the one searched (FaissFlat is echoed as given).
    props = encode_properties(body.get("properties"))
    try:
        hnsw = HnswParams.from_properties(body.get("properties") or {})
    except ValueError as e:
        raise QueryError(f"AddDescriptorSet: {e}") from e
    try:
        existing = tx.get_set(name, cmd)
    except QueryError:
        existing = None
    if existing is not None:
        # OPEN in SEMANTICS.md: a duplicate name is a conditional-add hit: status 2 (and only the
        # status, the shape the conformance case allows), nothing created, _ref bound to the set.
        tx.bind(body, cmd, Binding([existing.id], "_DescriptorSet"))
        return {"status": 2}
    props.update({"_name": name, "_dimensions": dims, "_metrics": metrics, "_engines": engines})
    rid = insert_object(tx, "_DescriptorSet", props, body, cmd)
    tx.create_set(rid, name, dims, metrics, engines, hnsw)
    return {"status": 0}


def find_descriptor_set(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    tx.flush()
    r = results_spec(body, cmd)
    sel = Select("_DescriptorSet")
    for key in ("with_name", "name", "set"):
        if key in body:
            if not isinstance(body[key], str):
                raise QueryError(f"{cmd}: '{key}' must be a string")
            sel.add(f"{prop_expr('o', '_name')} = ?", [body[key]])
    apply_filters(tx, body, cmd, sel)
    rows = find_rows(tx, sel, body, r, cmd)
    tx.bind(body, cmd, binding_of(rows, "_DescriptorSet"))
    flags = {k: bool_param(body, k, cmd) for k in ("counts", "dimensions", "engines", "metrics")}
    extra: dict[int, dict[str, Any]] = {}
    for row in rows:
        p = jsonio.loads(row[2])
        e: dict[str, Any] = {}
        if flags["counts"]:
            e["_count"] = tx.conn.execute("SELECT count(*) FROM vectors WHERE set_id=?", (row[0],)).fetchone()[0]
        if flags["dimensions"]:
            e["_dimensions"] = p["_dimensions"]
        if flags["engines"]:
            e["_engines"] = p["_engines"]
        if flags["metrics"]:
            e["_metrics"] = p["_metrics"]
        extra[row[0]] = e
    return respond(tx, body, cmd, rows, r, extra=extra, force_entities=any(flags.values()))


def delete_descriptor_set(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    sel = Select("_DescriptorSet")
    tx.flush()
    if "with_name" in body:
        sel.add(f"{prop_expr('o', '_name')} = ?", [body["with_name"]])
    apply_filters(tx, body, cmd, sel)
    ids = [r[0] for r in tx.conn.execute(f"SELECT o.id FROM objects o WHERE {sel.sql()}", sel.params)]
    delete_ids(tx, ids)
    return {"count": len(ids), "status": 0}


# -- descriptors -----------------------------------------------------------------------------------------


def add_descriptor(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    if "set" not in body:
        raise QueryError("AddDescriptor: 'set' is required")
    s = tx.get_set(body["set"], cmd)
    blob = tx.next_blob(cmd)
    if len(blob) != s.dims * 4:
        raise QueryError(
            f"AddDescriptor: the descriptor blob has {len(blob)} bytes but set {s.name!r} has "
            f"{s.dims} dimensions ({s.dims * 4} bytes of float32)"
        )
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        raise QueryError("AddDescriptor: 'label' must be a string")
    props = encode_properties(body.get("properties"))
    if "if_not_found" in body:
        sel = Select("_Descriptor")
        sel.add("o.set_id = ?", [s.id])
        found = if_not_found(tx, body, cmd, sel)
        if found:
            tx.bind(body, cmd, Binding([row[0] for row in found], "_Descriptor"))
            return exists_response(cmd)
    rid = insert_object(tx, "_Descriptor", props, body, cmd, set_id=s.id, label=label)
    tx.add_vector(s.id, rid, blob)
    return {"status": 0}


def find_descriptor(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    tx.flush()
    r = results_spec(body, cmd)
    s = tx.get_set(body.get("set"), cmd) if "set" in body else None
    k = int_param(body, "k_neighbors", cmd, minimum=1)
    want = {f: bool_param(body, f, cmd) for f in ("distances", "labels", "blobs")}
    sel = Select("_Descriptor")
    if s is not None:
        sel.add("o.set_id = ?", [s.id])
    apply_filters(tx, body, cmd, sel)
    group = group_source(tx, body, r, cmd)
    extra: dict[int, dict[str, Any]] = {}
    batched: list[list[tuple[Any, ...]]] | None = None
    if k is not None:
        if s is None:
            raise QueryError("FindDescriptor: k_neighbors needs 'set'")
        blob = tx.next_blob(cmd)
        if not blob or len(blob) % (s.dims * 4):
            raise QueryError(
                f"FindDescriptor: the query blob has {len(blob)} bytes, not a multiple of "
                f"{s.dims * 4} (set {s.name!r} has {s.dims} float32 dimensions)"
            )
        q = np.frombuffer(blob, dtype="<f4").reshape(-1, s.dims)
        filtered = sel if (len(sel.where) > 2) else None
        if filtered is not None and bool_param(body, "knn_first", cmd):
            # knn_first (the old default): the k nearest of the whole set, then the filter (may give < k)
            hits = knn(tx, s, q, k, None)
            ids = json_ids(sorted({i for h in hits for i, _ in h}))
            ok = {
                r[0]
                for r in tx.conn.execute(
                    f"SELECT o.id FROM objects o WHERE {sel.sql()} AND o.id IN (SELECT value FROM json_each(?))",
                    [*sel.params, ids],
                )
            }
            hits = [[(i, dist) for i, dist in h[:k] if i in ok] for h in hits]
        else:
            hits = knn(tx, s, q, k, filtered)
        all_ids = sorted({i for h in hits for i, _ in h})
        rows_by_id = fetch_rows(tx, all_ids)
        per_query = []
        for h in hits:
            rows_q = []
            for i, dist in h:
                row = rows_by_id.get(i)
                if row is None:
                    continue  # deleted concurrently
                rows_q.append(row)
                if want["distances"]:
                    extra.setdefault(i, {})["_distance"] = dist
                if len(rows_q) == k:
                    break
            per_query.append(rows_q)
        sort = sort_spec(body, r, cmd)
        if sort is not None:
            key, desc = sort
            per_query = [_py_sort(rows_q, key, desc) for rows_q in per_query]
        limit = int_param(body, "limit", cmd, r.get("limit"))
        offset = int_param(body, "offset", cmd, 0)
        if limit is not None or offset:
            end = None if limit is None else offset + limit
            per_query = [rows_q[offset:end] for rows_q in per_query]
        if len(per_query) > 1:
            batched = per_query
        rows = [row for rq in per_query for row in rq]
    else:
        rows = find_rows(tx, sel, body, r, cmd)
    for row in rows:
        if want["labels"]:
            extra.setdefault(row[0], {})["_label"] = row[4] if row[4] is not None else "None"
    tx.bind(body, cmd, Binding([row[0] for row in rows], "_Descriptor"))
    force = want["distances"] or want["labels"]

    def vec_blob(row: tuple[Any, ...]) -> bytes:
        return bytes(tx.conn.execute("SELECT vec FROM vectors WHERE id=?", (row[0],)).fetchone()[0])

    if batched is None:
        return respond(
            tx,
            body,
            cmd,
            rows,
            r,
            extra=extra,
            want_blobs=want["blobs"],
            blob_fn=vec_blob,
            force_entities=force,
            group_by=group,
        )
    # Batched query vectors (OPEN): `entities` holds one list per query vector, in order.
    parts = [
        respond(tx, body, cmd, rq, r, extra=extra, want_blobs=want["blobs"], blob_fn=vec_blob, force_entities=force)
        for rq in batched
    ]
    resp: dict[str, Any] = {"status": 0, "returned": sum(p["returned"] for p in parts)}
    if r.get("count"):
        resp["count"] = len(rows)
    if any("entities" in p for p in parts):
        resp["entities"] = [p.get("entities", []) for p in parts]
    starts = [p["blobs_start"] for p in parts if "blobs_start" in p]
    if starts:
        resp["blobs_start"] = starts[0]
    return sorted_keys(resp)


def _py_sort(rows: list[tuple[Any, ...]], key: str, desc: bool) -> list[tuple[Any, ...]]:
    def k(row: tuple[Any, ...]) -> tuple[int, Any]:
        v = jsonio.loads(row[2]).get(key)
        if isinstance(v, dict):
            v = v.get("_t")
        if v is None:
            return (0, 0)
        return (1 if isinstance(v, int | float) else 2, v)

    return sorted(rows, key=k, reverse=desc)
