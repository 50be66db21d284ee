"""Database commands: GetSchema, GetStatus and the property indexes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constraints import prop_expr
from .errors import QueryError

if TYPE_CHECKING:
    from .tx import Tx


def _type_name(t: str) -> str:
    return {
        "text": "String",
        "integer": "Number",
        "real": "Number",
        "true": "Boolean",
        "false": "Boolean",
        "object": "DateTime",
        "null": "Null",
    }.get(t, "String")


def get_schema(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    tx.flush()
    indexed = {(c, p) for c, p in tx.conn.execute("SELECT cls, prop FROM prop_indexes")}
    ents: dict[str, Any] = {}
    for cls, n in tx.conn.execute("SELECT cls, count(*) FROM objects GROUP BY cls ORDER BY cls"):
        ents[cls] = {"matched": n, "properties": None}
    for cls, key, typ, n in tx.conn.execute(
        "SELECT o.cls, j.key, j.type, count(*) FROM objects o, json_each(o.props) j "
        "GROUP BY o.cls, j.key ORDER BY o.cls, j.key"
    ):
        props = ents[cls]["properties"] or {}
        props[key] = [n, (cls, key) in indexed, _type_name(typ)]
        ents[cls]["properties"] = props
    conns: dict[str, Any] = {}
    for cc, n, sc, dc in tx.conn.execute(
        "SELECT c.cls, count(*), min(s.cls), min(d.cls) FROM conns c JOIN objects s ON s.id=c.src "
        "JOIN objects d ON d.id=c.dst GROUP BY c.cls ORDER BY c.cls"
    ):
        conns[cc] = {"dst": dc, "matched": n, "properties": None, "src": sc}
    for cc, key, typ, n in tx.conn.execute(
        "SELECT c.cls, j.key, j.type, count(*) FROM conns c, json_each(c.props) j "
        "GROUP BY c.cls, j.key ORDER BY c.cls, j.key"
    ):
        if cc in conns:
            props = conns[cc]["properties"] or {}
            props[key] = [n, (cc, key) in indexed, _type_name(typ)]
            conns[cc]["properties"] = props
    return {
        "connections": {"classes": conns, "returned": len(conns)} if conns else None,
        "entities": {"classes": ents, "returned": len(ents)} if ents else None,
        "status": 0,
    }


def get_status(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"info": "OK", "status": 0, "system": "ApertureDB", "version": "0.19.6 (moments embedded)"}


def _index_args(body: dict[str, Any], cmd: str) -> tuple[str, str, str, str]:
    target, cls, prop = body.get("target"), body.get("class"), body.get("property")
    kind = body.get("kind", "ordered")
    if target not in ("entity", "connection"):
        raise QueryError(f"{cmd}: 'target' must be 'entity' or 'connection', got {target!r}")
    for k, v in (("class", cls), ("property", prop), ("kind", kind)):
        if not isinstance(v, str) or not v:
            raise QueryError(f"{cmd}: '{k}' is required (a non-empty string)")
    if kind != "ordered":
        raise QueryError(f"{cmd}: unsupported index kind {kind!r} (supported: 'ordered')")
    return target, cls, prop, kind  # type: ignore[return-value]


def create_index(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    target, cls, prop, kind = _index_args(body, cmd)
    prop_expr("o", prop)  # validates the name
    cur = tx.conn.execute("INSERT OR IGNORE INTO prop_indexes VALUES (?,?,?,?)", (target, cls, prop, kind))
    tx.ensure_index("objects" if target == "entity" else "conns", prop)
    if cur.rowcount == 0:
        return {"info": "Index exists!", "status": 2}
    return {"status": 0}


def remove_index(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    target, cls, prop, kind = _index_args(body, cmd)
    cur = tx.conn.execute(
        "DELETE FROM prop_indexes WHERE target=? AND cls=? AND prop=? AND kind=?", (target, cls, prop, kind)
    )
    if cur.rowcount == 0:
        raise QueryError(f"{cmd}: no {kind} index on {target} {cls}.{prop}")
    return {"status": 0}


def get_indexes(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    rows = tx.conn.execute("SELECT target, cls, prop, kind FROM prop_indexes ORDER BY 1,2,3").fetchall()
    out = [
        {"class": c, "kind": k, "property": p, "target": t}
        for t, c, p, k in rows
        if body.get("target", t) == t and body.get("class", c) == c and body.get("property", p) == p
    ]
    return {"indexes": out, "status": 0}
