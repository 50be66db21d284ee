"""What the command handlers share: ref bindings, WHERE clauses from filters (constraints,
is_connected_to), the results block, and the response shape (entities, blobs, group_by_source)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import jsonio
from .constraints import compile_constraints, prop_expr, uid_of
from .errors import QueryError
from .model import Binding
from .readcache import CachedRow, Edge
from .values import decode_value, json_type_name

if TYPE_CHECKING:
    from .engine import Tx

OBJ, CONN = 1, 2  # _uniqueid prefixes
VIDEO_CLIP = "_VideoToClip"
SET_MEMBER = "_DescriptorSetToDescriptor"

CLASS_OF = {
    "Image": "_Image",
    "Video": "_Video",
    "Clip": "_Clip",
    "Blob": "_Blob",
    "Descriptor": "_Descriptor",
    "DescriptorSet": "_DescriptorSet",
    "BoundingBox": "_BoundingBox",
    "Polygon": "_Polygon",
    "Frame": "_Frame",
}


def _sorted(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items()))


def _int(body: dict[str, Any], key: str, cmd: str, default: int | None = None, minimum: int = 0) -> Any:
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise QueryError(f"{cmd}: '{key}' must be an integer >= {minimum}, got {v!r}")
    return v


def _bool(body: dict[str, Any], key: str, cmd: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool):
        raise QueryError(f"{cmd}: '{key}' must be a boolean, got {json_type_name(v)}")
    return v


def _binding(tx: Tx, ref: Any, cmd: str) -> Binding:
    if not isinstance(ref, int) or isinstance(ref, bool):
        raise QueryError(f"{cmd}: a reference must be an integer, got {ref!r}")
    b = tx.refs.get(ref)
    if b is None:
        raise QueryError(f"{cmd}: Reference does not exist: {ref}")
    return b


def _bind(tx: Tx, body: dict[str, Any], cmd: str, b: Binding) -> None:
    if "_ref" in body:
        ref = body["_ref"]
        if not isinstance(ref, int) or isinstance(ref, bool) or ref < 1:
            raise QueryError(f"{cmd}: '_ref' must be a positive integer, got {ref!r}")
        if ref in tx.refs:
            raise QueryError(f"{cmd}: _ref {ref} is already used in this query")
        tx.refs[ref] = b


def _ids_param(ids: list[int]) -> str:
    return jsonio.dumps(ids)


class Select:
    """WHERE clauses over `objects o` built from a command's filters."""

    def __init__(self, cls: str | None) -> None:
        self.where: list[str] = []
        self.params: list[Any] = []
        if cls is not None:
            self.where.append("o.cls = ?")
            self.params.append(cls)

    def add(self, sql: str, params: list[Any]) -> None:
        self.where.append(sql)
        self.params.extend(params)

    def sql(self) -> str:
        return " AND ".join(self.where) if self.where else "1"


def _connected(tx: Tx, spec: Any, cmd: str, sel: Select) -> None:
    if not isinstance(spec, dict):
        raise QueryError(f"{cmd}: is_connected_to must be an object")
    if "any" in spec or "all" in spec:
        if set(spec) not in ({"any"}, {"all"}):
            raise QueryError(f"{cmd}: is_connected_to takes either 'any' or 'all' alone")
        op = "any" if "any" in spec else "all"
        subs = spec[op]
        if not isinstance(subs, list) or not subs:
            raise QueryError(f"{cmd}: is_connected_to.{op} takes a non-empty array")
        parts = []
        for s in subs:
            inner = Select(None)
            _connected(tx, s, cmd, inner)
            parts.append("(" + inner.sql() + ")")
            sel.params.extend(inner.params)
        sel.where.append("(" + (" OR " if op == "any" else " AND ").join(parts) + ")")
        return
    extra = set(spec) - {"ref", "direction", "connection_class", "constraints"}
    if extra:
        raise QueryError(f"{cmd}: is_connected_to: unsupported parameter {sorted(extra)[0]!r}")
    if "ref" not in spec:
        raise QueryError(f"{cmd}: is_connected_to needs 'ref'")
    b = _binding(tx, spec["ref"], cmd)
    direction = spec.get("direction", "any")
    if direction not in ("in", "out", "any"):
        raise QueryError(f"{cmd}: is_connected_to.direction must be 'in', 'out' or 'any', got {direction!r}")
    cc = spec.get("connection_class")
    if cc is not None and not isinstance(cc, str):
        raise QueryError(f"{cmd}: is_connected_to.connection_class must be a string")
    ids = _ids_param(b.ids)
    if cc == SET_MEMBER or (cc is None and b.cls == "_DescriptorSet"):
        sel.add("o.set_id IN (SELECT value FROM json_each(?))", [ids])
        return
    extra_sql, extra_params = "", []
    if cc is not None:
        extra_sql += " AND c.cls = ?"
        extra_params.append(cc)
    if "constraints" in spec:
        csql, cparams = compile_constraints(spec["constraints"], "c", CONN)
        extra_sql += " AND " + csql
        extra_params.extend(cparams)
    out_q = f"SELECT c.dst FROM conns c WHERE c.src IN (SELECT value FROM json_each(?)){extra_sql}"
    in_q = f"SELECT c.src FROM conns c WHERE c.dst IN (SELECT value FROM json_each(?)){extra_sql}"
    # One IN over a UNION (not two INs ORed) so SQLite looks the few ids up by rowid.
    if direction == "out":
        sel.add(f"o.id IN ({out_q})", [ids, *extra_params])
    elif direction == "in":
        sel.add(f"o.id IN ({in_q})", [ids, *extra_params])
    else:
        sel.add(f"o.id IN ({out_q} UNION {in_q})", [ids, *extra_params, ids, *extra_params])


def _filters(tx: Tx, body: dict[str, Any], cmd: str, sel: Select) -> None:
    if "constraints" in body:
        sql, params = compile_constraints(body["constraints"], "o", OBJ)
        sel.add(sql, params)
    if "is_connected_to" in body:
        _connected(tx, body["is_connected_to"], cmd, sel)
    for key in ("ref", "_ref") if cmd.startswith(("Update", "Delete")) else ():
        if key in body:
            b = _binding(tx, body[key], cmd)
            sel.add("o.id IN (SELECT value FROM json_each(?))", [_ids_param(b.ids)])


def _sort_spec(body: dict[str, Any], results: dict[str, Any], cmd: str) -> tuple[str, bool] | None:
    s = body.get("sort", results.get("sort"))
    if s is None:
        return None
    if isinstance(s, str):
        return s, False
    if isinstance(s, dict) and isinstance(s.get("key"), str):
        order = s.get("order", "ascending")
        if order not in ("ascending", "descending"):
            raise QueryError(f"{cmd}: sort.order must be 'ascending' or 'descending'")
        return s["key"], order == "descending"
    raise QueryError(f"{cmd}: sort must be a property name or {{key, order}}")


def _results(body: dict[str, Any], cmd: str) -> dict[str, Any]:
    r = body.get("results", {})
    if not isinstance(r, dict):
        raise QueryError(f"{cmd}: results must be an object")
    allowed = {"list", "all_properties", "count", "limit", "sort", "group_by_source"}
    extra = set(r) - allowed
    if extra:
        raise QueryError(f"{cmd}: results: unsupported parameter {sorted(extra)[0]!r}")
    if "list" in r and (not isinstance(r["list"], list) or not all(isinstance(k, str) for k in r["list"])):
        raise QueryError(f"{cmd}: results.list must be an array of property names")
    for k in ("all_properties", "count", "group_by_source"):
        if k in r and not isinstance(r[k], bool):
            raise QueryError(f"{cmd}: results.{k} must be a boolean")
    return r


def _wants_props(r: dict[str, Any]) -> bool:
    return bool(r.get("all_properties")) or "list" in r


HIDDEN_SET_KEYS = {"_dimensions", "_engines", "_metrics"}


def decoded_props(props_json: str) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in jsonio.loads(props_json).items()}


def _entity(tx: Tx, row: tuple[Any, ...], r: dict[str, Any]) -> dict[str, Any]:
    rid, cls, props_json, set_id, label = row
    props = tx.props_of.get(rid)
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


def fetch_rows(tx: Tx, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """The rows of `ids` that exist, through the read cache for readers (their decoded properties go to
    `tx.props_of` for the response builder)."""
    rows: dict[int, tuple[Any, ...]] = {}
    if not ids:
        return rows
    snap = tx.snap
    missing = ids
    if snap is not None:
        found, missing = tx.engine.cache.rows(ids, snap)
        for i, e in found.items():
            rows[i] = e.row
            tx.props_of[i] = e.props
    if missing:
        read = tx.conn.execute(
            f"SELECT {ROW_COLS} FROM objects o WHERE o.id IN (SELECT value FROM json_each(?))",
            (_ids_param(missing),),
        ).fetchall()
        fresh: dict[int, CachedRow] = {}
        for row in read:
            rows[row[0]] = row
            if snap is not None:
                props = tx.props_of[row[0]] = decoded_props(row[2])
                fresh[row[0]] = CachedRow(row, props)
        if fresh and snap is not None:
            tx.engine.cache.put_rows(fresh, snap)
    return rows


def fetch_edges(tx: Tx, ids: list[int]) -> dict[int, tuple[Edge, ...]]:
    """Every connection of each of `ids`: (other object, class, outgoing), through the read cache for readers."""
    snap = tx.snap
    out: dict[int, tuple[Edge, ...]] = {}
    missing = ids
    if snap is not None:
        out, missing = tx.engine.cache.edges(ids, snap)
    if missing:
        p = _ids_param(missing)
        read: dict[int, list[Edge]] = {i: [] for i in missing}
        for a, b, cc, outgoing in tx.conn.execute(
            "SELECT src, dst, cls, 1 FROM conns WHERE src IN (SELECT value FROM json_each(?)) UNION ALL "
            "SELECT dst, src, cls, 0 FROM conns WHERE dst IN (SELECT value FROM json_each(?))",
            (p, p),
        ):
            read[a].append((b, cc, bool(outgoing)))
        fresh = {i: tuple(e) for i, e in read.items()}
        if snap is not None:
            tx.engine.cache.put_edges(fresh, snap)
        out.update(fresh)
    return out


ROW_COLS = "o.id, o.cls, o.props, o.set_id, o.label"


def _blob_of(tx: Tx, rid: int) -> bytes | None:
    row = tx.conn.execute("SELECT data, file FROM blobdata WHERE id=?", (rid,)).fetchone()
    if row is None:
        return None
    data, fname = row
    if data is not None:
        return bytes(data)
    return tx.engine.blob_files.read(fname)


def _respond(
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
    entities: list[dict[str, Any]] = []
    if "uniqueids" in body:
        _bool(body, "uniqueids", cmd)
    emit = _wants_props(r) or force_entities or want_blobs or bool(body.get("uniqueids"))
    if emit and rows:
        start = len(tx.out_blobs)
        for row in rows:
            e = _entity(tx, row, r)
            if body.get("uniqueids"):
                e["_uniqueid"] = uid_of(OBJ, row[0])
            if extra and row[0] in extra:
                e.update(extra[row[0]])
            if want_blobs:
                data = blob_fn(row) if blob_fn else _blob_of(tx, row[0])
                if data is not None:
                    e["_blob_index"] = len(tx.out_blobs)
                    tx.out_blobs.append(data)
            entities.append(_sorted(e))
        if want_blobs and len(tx.out_blobs) > start:
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
    return _sorted(resp)


def _group(tx: Tx, src: Binding, rows: list[tuple[Any, ...]], ents: list[dict[str, Any]]) -> dict[str, Any]:
    by_id = {row[0]: e for row, e in zip(rows, ents, strict=True)}
    res_ids = _ids_param(list(by_id))
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
        src_ids = _ids_param(src.ids)
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


def _group_source(tx: Tx, body: dict[str, Any], r: dict[str, Any], cmd: str) -> Binding | None:
    if not (body.get("group_by_source") or r.get("group_by_source")):
        return None
    if r.get("count"):
        raise QueryError(f"{cmd}: group_by_source cannot be combined with count")
    spec = body.get("is_connected_to")
    if isinstance(spec, dict) and "ref" in spec:
        return _binding(tx, spec["ref"], cmd)
    if "video_ref" in body:
        return _binding(tx, body["video_ref"], cmd)
    raise QueryError(f"{cmd}: group_by_source needs is_connected_to with a single ref, or video_ref")


_NEIGHBOUR_KEYS = {"_ref", "is_connected_to", "results"}


def find_neighbours(tx: Tx, body: dict[str, Any], cls: str | None) -> list[tuple[Any, ...]] | None:
    """The rows of a Find whose only filter is `is_connected_to` one ref (the second step of a search),
    from the read cache's edges and rows; None when the query has another shape (the SQL path answers it)."""
    spec = body.get("is_connected_to")
    if tx.snap is None or not isinstance(spec, dict) or body.keys() - _NEIGHBOUR_KEYS:
        return None
    if spec.keys() - {"ref", "direction", "connection_class"} or set(body.get("results") or {}) - {
        "list",
        "all_properties",
        "group_by_source",
    }:
        return None
    direction, cc, ref = spec.get("direction", "any"), spec.get("connection_class"), spec.get("ref")
    b = tx.refs.get(ref) if isinstance(ref, int) and not isinstance(ref, bool) else None
    if b is None or b.conns or direction not in ("in", "out", "any") or not (cc is None or isinstance(cc, str)):
        return None  # the SQL path words the error
    if cc == SET_MEMBER or (cc is None and b.cls == "_DescriptorSet"):
        return None
    wanted: set[int] = set()
    for edges in fetch_edges(tx, list(dict.fromkeys(b.ids))).values():
        for other, ecls, outgoing in edges:
            if (cc is None or ecls == cc) and (direction == "any" or outgoing == (direction == "out")):
                wanted.add(other)
    rows = fetch_rows(tx, sorted(wanted))
    return [row for _, row in sorted(rows.items()) if cls is None or row[1] == cls]


def _find_rows(tx: Tx, sel: Select, body: dict[str, Any], r: dict[str, Any], cmd: str) -> list[tuple[Any, ...]]:
    order = "o.id"
    params = list(sel.params)
    s = _sort_spec(body, r, cmd)
    if s is not None:
        key, desc = s
        # dates sort by instant (their `_t`), other values by themselves
        expr = "o.id" if key == "_uniqueid" else (f"coalesce({prop_expr('o', key, '._t')}, {prop_expr('o', key)})")
        order = f"{expr} {'DESC' if desc else 'ASC'}, o.id"
    limit = _int(body, "limit", cmd, r.get("limit"))
    offset = _int(body, "offset", cmd, 0)
    q = f"SELECT {ROW_COLS} FROM objects o WHERE {sel.sql()} ORDER BY {order}"
    if limit is not None or offset:
        q += " LIMIT ? OFFSET ?"
        params += [limit if limit is not None else -1, offset]
    return tx.conn.execute(q, params).fetchall()
