"""WHERE clauses over `objects o` from a command's filters: constraints, is_connected_to, ref."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .constraints import compile_constraints
from .errors import QueryError
from .params import check_keys, json_ids
from .storage import CONN, OBJ, SET_MEMBER

if TYPE_CHECKING:
    from .tx import Tx


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
    check_keys(spec, {"ref", "direction", "connection_class", "constraints"}, f"{cmd}: is_connected_to")
    if "ref" not in spec:
        raise QueryError(f"{cmd}: is_connected_to needs 'ref'")
    b = tx.ref(spec["ref"], cmd)
    direction = spec.get("direction", "any")
    if direction not in ("in", "out", "any"):
        raise QueryError(f"{cmd}: is_connected_to.direction must be 'in', 'out' or 'any', got {direction!r}")
    cc = spec.get("connection_class")
    if cc is not None and not isinstance(cc, str):
        raise QueryError(f"{cmd}: is_connected_to.connection_class must be a string")
    ids = json_ids(b.ids)
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


def apply_filters(tx: Tx, body: dict[str, Any], cmd: str, sel: Select) -> None:
    if "constraints" in body:
        sql, params = compile_constraints(body["constraints"], "o", OBJ)
        sel.add(sql, params)
    if "is_connected_to" in body:
        _connected(tx, body["is_connected_to"], cmd, sel)
    for key in ("ref", "_ref") if cmd.startswith(("Update", "Delete")) else ():
        if key in body:
            b = tx.ref(body[key], cmd)
            sel.add("o.id IN (SELECT value FROM json_each(?))", [json_ids(b.ids)])
