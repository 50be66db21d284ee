"""Connections: Add, Find, Update, Delete."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import jsonio
from .constraints import compile_constraints, uid_of
from .errors import QueryError
from .params import int_param, json_ids, remove_props_param, results_spec, sorted_keys, wants_props
from .properties import decode_value, encode_properties
from .storage import CONN
from .tx import Binding
from .writes import exists_response, rewrite_props

if TYPE_CHECKING:
    from .tx import Tx


def add_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    cc = body.get("class")
    if not isinstance(cc, str) or not cc:
        raise QueryError("AddConnection: 'class' is required (a non-empty string)")
    if "src" not in body or "dst" not in body:
        raise QueryError("AddConnection: 'src' and 'dst' references are required")
    src = tx.ref(body["src"], cmd)
    dst = tx.ref(body["dst"], cmd)
    props = encode_properties(body.get("properties"))
    if "if_not_found" in body:
        tx.flush()
        sql, params = compile_constraints(body["if_not_found"], "c", CONN)
        found = tx.conn.execute(
            f"SELECT c.id FROM conns c WHERE c.cls=? AND c.src IN (SELECT value FROM json_each(?)) "
            f"AND c.dst IN (SELECT value FROM json_each(?)) AND {sql}",
            [cc, json_ids(src.ids), json_ids(dst.ids), *params],
        ).fetchall()
        if found:
            tx.bind(body, cmd, Binding([r[0] for r in found], cc, conns=True))
            return exists_response(cmd)
    pj = jsonio.dumps(props)
    new = []
    for s in src.ids:
        for d in dst.ids:
            new.append(tx.insert_connection(cc, s, d, pj))
    tx.bind(body, cmd, Binding(new, cc, conns=True))
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
            b = tx.ref(body[key], cmd)
            where.append(f"{col} IN (SELECT value FROM json_each(?))")
            params.append(json_ids(b.ids))
    for key in ("ref", "_ref") if cmd != "FindConnection" else ():
        if key in body:
            b = tx.ref(body[key], cmd)
            if not b.conns:
                raise QueryError(f"{cmd}: reference {body[key]} does not name connections")
            where.append("c.id IN (SELECT value FROM json_each(?))")
            params.append(json_ids(b.ids))
    return " AND ".join(where), params


def find_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    r = results_spec(body, cmd)
    if "group" in r:
        raise QueryError(f"{cmd}: results: unsupported parameter 'group'")
    where, params = _conn_select(tx, body, cmd)
    q = f"SELECT c.id, c.cls, c.props, c.src, c.dst FROM conns c WHERE {where} ORDER BY c.id"
    limit = int_param(body, "limit", cmd, r.get("limit"))
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    rows = tx.conn.execute(q, params).fetchall()
    tx.bind(body, cmd, Binding([row[0] for row in rows], body.get("with_class"), conns=True))
    resp: dict[str, Any] = {"status": 0}
    if r.get("count"):
        resp["count"] = len(rows)
    out = []
    if wants_props(r) or body.get("uniqueids"):
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
            out.append(sorted_keys(e))
    if out:
        resp["connections"] = out
    resp["returned"] = len(out)
    return sorted_keys(resp)


def update_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    props = encode_properties(body.get("properties"))
    remove = remove_props_param(body, cmd)
    where, params = _conn_select(tx, body, cmd)
    rows = tx.conn.execute(f"SELECT c.id, c.props FROM conns c WHERE {where}", params).fetchall()
    rewrite_props(tx, "conns", rows, props, remove)
    return {"count": len(rows), "status": 0}


def delete_connection(tx: Tx, cmd: str, body: dict[str, Any]) -> dict[str, Any]:
    where, params = _conn_select(tx, body, cmd)
    ends = tx.conn.execute(
        f"DELETE FROM conns WHERE id IN (SELECT c.id FROM conns c WHERE {where}) RETURNING src, dst", params
    ).fetchall()
    tx.touch(i for pair in ends for i in pair)
    return {"count": len(ends), "status": 0}
