"""Reading object rows (storage.ROW_COLS) and edges: through the read cache for readers, the Find
query with sort/limit/offset, and the fast path of a search's second step."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import jsonio
from .constraints import prop_expr
from .params import int_param, json_ids, sort_spec
from .properties import decode_value
from .readcache import CachedRow, Edge
from .storage import ROW_COLS, SET_MEMBER

if TYPE_CHECKING:
    from .filters import Select
    from .tx import Tx


def decoded_props(props_json: str) -> dict[str, Any]:
    return {k: decode_value(v) for k, v in jsonio.loads(props_json).items()}


def fetch_rows(tx: Tx, ids: list[int]) -> dict[int, tuple[Any, ...]]:
    """The rows of `ids` that exist, through the read cache for readers (their decoded properties go to
    `tx.decoded` for the response builder)."""
    rows: dict[int, tuple[Any, ...]] = {}
    if not ids:
        return rows
    snap = tx.snap
    missing = ids
    if snap is not None:
        found, missing = tx.cache.rows(ids, snap)
        for i, e in found.items():
            rows[i] = e.row
            tx.decoded[i] = e.props
    if missing:
        read = tx.conn.execute(
            f"SELECT {ROW_COLS} FROM objects o WHERE o.id IN (SELECT value FROM json_each(?))",
            (json_ids(missing),),
        ).fetchall()
        fresh: dict[int, CachedRow] = {}
        for row in read:
            rows[row[0]] = row
            if snap is not None:
                props = tx.decoded[row[0]] = decoded_props(row[2])
                fresh[row[0]] = CachedRow(row, props)
        if fresh and snap is not None:
            tx.cache.put_rows(fresh, snap)
    return rows


def fetch_edges(tx: Tx, ids: list[int]) -> dict[int, tuple[Edge, ...]]:
    """Every connection of each of `ids`: (other object, class, outgoing), through the read cache for readers."""
    snap = tx.snap
    out: dict[int, tuple[Edge, ...]] = {}
    missing = ids
    if snap is not None:
        out, missing = tx.cache.edges(ids, snap)
    if missing:
        p = json_ids(missing)
        read: dict[int, list[Edge]] = {i: [] for i in missing}
        for a, b, cc, outgoing in tx.conn.execute(
            "SELECT src, dst, cls, 1 FROM conns WHERE src IN (SELECT value FROM json_each(?)) UNION ALL "
            "SELECT dst, src, cls, 0 FROM conns WHERE dst IN (SELECT value FROM json_each(?))",
            (p, p),
        ):
            read[a].append((b, cc, bool(outgoing)))
        fresh = {i: tuple(e) for i, e in read.items()}
        if snap is not None:
            tx.cache.put_edges(fresh, snap)
        out.update(fresh)
    return out


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
    b = tx.peek_ref(ref)
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


def find_rows(tx: Tx, sel: Select, body: dict[str, Any], r: dict[str, Any], cmd: str) -> list[tuple[Any, ...]]:
    order = "o.id"
    params = list(sel.params)
    s = sort_spec(body, r, cmd)
    if s is not None:
        key, desc = s
        # dates sort by instant (their `_t`), other values by themselves
        expr = "o.id" if key == "_uniqueid" else (f"coalesce({prop_expr('o', key, '._t')}, {prop_expr('o', key)})")
        order = f"{expr} {'DESC' if desc else 'ASC'}, o.id"
    limit = int_param(body, "limit", cmd, r.get("limit"))
    offset = int_param(body, "offset", cmd, 0)
    q = f"SELECT {ROW_COLS} FROM objects o WHERE {sel.sql()} ORDER BY {order}"
    if limit is not None or offset:
        q += " LIMIT ? OFFSET ?"
        params += [limit if limit is not None else -1, offset]
    return tx.conn.execute(q, params).fetchall()
