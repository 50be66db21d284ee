"""ApertureDB `constraints` blocks compiled to SQL over JSON properties.

`{"key": [op, v, op, v, ...]}`: the pairs on one key are ANDed, the keys are ANDed; `{"any": {...}}` ORs
its keys, `{"all": {...}}` ANDs them, and both nest. Operators: `== != < <= > >= in` and `not in`.

Decisions where SEMANTICS.md is OPEN:
- a constraint only matches objects whose property has the operand's type (a number constraint never
  matches a string property, a missing key never matches), except `["==", null]`, which matches a
  missing or null property, and `["!=", null]`, which matches a present, non-null one;
- dates compare by instant; `in`/`not in` take a non-empty array of scalars.

The expression `json_extract(<alias>.props, '$."key"')` is spelled exactly as the indexes made by
CreateIndex spell it, so SQLite uses those indexes.
"""

from __future__ import annotations

from typing import Any

from .errors import QueryError
from .properties import json_type_name, parse_date

OPS = {"==": "=", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
LIST_OPS = {"in", "not in"}


def prop_expr(alias: str, key: str, sub: str = "") -> str:
    if '"' in key or "'" in key:
        raise QueryError(f"constraints: invalid property name {key!r}")
    return f"json_extract({alias}.props, '$.\"{key}\"{sub}')"


def type_expr(alias: str, key: str, sub: str = "") -> str:
    return f"json_type({alias}.props, '$.\"{key}\"{sub}')"


def uid_of(prefix: int, row_id: int) -> str:
    return f"{prefix}.{row_id}.0"


def parse_uid(prefix: int, uid: Any) -> int | None:
    if not isinstance(uid, str):
        return None
    parts = uid.split(".")
    if len(parts) == 3 and parts[0] == str(prefix) and parts[2] == "0" and parts[1].isdigit():
        return int(parts[1])
    return None


class Compiler:
    def __init__(self, alias: str, uid_prefix: int) -> None:
        self.alias = alias
        self.uid_prefix = uid_prefix
        self.params: list[Any] = []

    def compile(self, constraints: Any) -> str:
        if isinstance(constraints, list):
            return self._expr(constraints)
        if not isinstance(constraints, dict):
            raise QueryError(f"constraints must be an object or an expression array, got {json_type_name(constraints)}")
        return self._block(constraints, " AND ")

    # The SDK's expression arrays (aperturedb.Constraints): ["all"|"any", expr, ...] or
    # ["$key", op, literal], literals being scalars, "$$..." (an escaped "$"), {"to_date": s} and
    # {"array": [...]}.
    def _expr(self, e: Any) -> str:
        if not isinstance(e, list) or not e or not isinstance(e[0], str):
            raise QueryError(f"constraints: invalid expression {e!r}")
        head = e[0]
        if head in ("all", "any"):
            if len(e) < 2:
                raise QueryError(f"constraints: '{head}' needs at least one term")
            return "(" + (" AND " if head == "all" else " OR ").join(self._expr(t) for t in e[1:]) + ")"
        if head.startswith("$") and not head.startswith("$$") and len(e) == 3:
            return "(" + self._term(head[1:], e[1], self._literal(e[2])) + ")"
        raise QueryError(f'constraints: invalid expression {e!r} (expected ["$key", op, value] or all/any)')

    def _literal(self, v: Any) -> Any:
        if isinstance(v, str) and v.startswith("$"):
            if v.startswith("$$"):
                return v[1:]
            raise QueryError(f"constraints: comparing with property reference {v!r} is not supported")
        if isinstance(v, dict) and len(v) == 1:
            if "to_date" in v:
                return {"_date": v["to_date"]}
            if "array" in v and isinstance(v["array"], list):
                return [self._literal(x) for x in v["array"]]
        return v

    def _block(self, block: dict[str, Any], joiner: str) -> str:
        parts = []
        for key, spec in block.items():
            if key in ("any", "all"):
                if not isinstance(spec, dict) or not spec:
                    raise QueryError(f"constraints: '{key}' takes a non-empty object")
                parts.append("(" + self._block(spec, " OR " if key == "any" else " AND ") + ")")
            else:
                parts.append(self._key(key, spec))
        if not parts:
            return "1"
        return "(" + joiner.join(parts) + ")"

    def _key(self, key: str, spec: Any) -> str:
        if not isinstance(spec, list) or not spec or len(spec) % 2:
            raise QueryError(f"constraints on {key!r}: expected [operator, value, ...] pairs, got {spec!r}")
        terms = [self._term(key, spec[i], spec[i + 1]) for i in range(0, len(spec), 2)]
        return "(" + " AND ".join(terms) + ")"

    def _term(self, key: str, op: Any, value: Any) -> str:
        if not isinstance(op, str) or (op not in OPS and op not in LIST_OPS):
            raise QueryError(
                f"constraints on {key!r}: unknown operator {op!r} (supported: ==, !=, <, <=, >, >=, in, not in)"
            )
        if key == "_uniqueid":
            return self._uid_term(op, value)
        if op in LIST_OPS:
            if not isinstance(value, list) or not value:
                raise QueryError(f"constraints on {key!r}: '{op}' takes a non-empty array")
            groups: dict[str, list[Any]] = {}
            for v in value:
                groups.setdefault(self._kind(key, v), []).append(v)
            ors = []
            for kind, vals in groups.items():
                guard, expr, conv = self._typed(key, kind)
                self.params.extend(conv(v) for v in vals)
                marks = ",".join("?" * len(vals))
                if kind == "str" and op == "in":
                    # json_extract gives TEXT only for JSON strings, and TEXT never equals a number:
                    # no type guard needed, so an index answers this alone (no row reads)
                    ors.append(f"{expr} IN ({marks})")
                else:
                    ors.append(f"({guard} AND {expr} IN ({marks}))")
            inner = "(" + " OR ".join(ors) + ")"
            if op == "in":
                return inner
            guard_any = f"{type_expr(self.alias, key)} IS NOT NULL"
            return f"({guard_any} AND NOT {inner})"
        if value is None:
            if op == "==":
                return f"({type_expr(self.alias, key)} IS NULL OR {type_expr(self.alias, key)} = 'null')"
            if op == "!=":
                return f"({type_expr(self.alias, key)} IS NOT NULL AND {type_expr(self.alias, key)} != 'null')"
            raise QueryError(f"constraints on {key!r}: null only works with == and !=")
        kind = self._kind(key, value)
        if kind == "bool" and op not in ("==", "!="):
            raise QueryError(f"constraints on {key!r}: booleans only work with == and !=")
        guard, expr, conv = self._typed(key, kind)
        self.params.append(conv(value))
        if kind == "str" and op == "==":
            return f"({expr} = ?)"  # as for 'in' above
        return f"({guard} AND {expr} {OPS[op]} ?)"

    def _kind(self, key: str, v: Any) -> str:
        if isinstance(v, bool):
            return "bool"
        if isinstance(v, int | float):
            return "num"
        if isinstance(v, str):
            return "str"
        if isinstance(v, dict) and set(v) == {"_date"}:
            return "date"
        raise QueryError(
            f"constraints on {key!r}: unsupported operand type {json_type_name(v)} "
            '(expected string, number, boolean, null or {"_date": ...})'
        )

    def _typed(self, key: str, kind: str) -> tuple[str, str, Any]:
        a = self.alias
        if kind == "num":
            return f"{type_expr(a, key)} IN ('integer','real')", prop_expr(a, key), lambda v: v
        if kind == "str":
            return f"{type_expr(a, key)} = 'text'", prop_expr(a, key), lambda v: v
        if kind == "bool":
            return f"{type_expr(a, key)} IN ('true','false')", prop_expr(a, key), lambda v: int(v)
        return (
            f"{type_expr(a, key, '._t')} IN ('integer','real')",
            prop_expr(a, key, "._t"),
            lambda v: parse_date(v["_date"]),
        )

    def _uid_term(self, op: str, value: Any) -> str:
        col = f"{self.alias}.id"
        if op in ("==", "!="):
            rid = parse_uid(self.uid_prefix, value)
            if not isinstance(value, str):
                raise QueryError("constraints on '_uniqueid': operand must be a string")
            self.params.append(rid if rid is not None else -1)
            return f"({col} {OPS[op]} ?)"
        if op in LIST_OPS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise QueryError(f"constraints on '_uniqueid': '{op}' takes an array of strings")
            ids = [parse_uid(self.uid_prefix, v) for v in value]
            self.params.extend(i if i is not None else -1 for i in ids)
            marks = ",".join("?" * len(ids)) or "NULL"
            return f"({col} {'IN' if op == 'in' else 'NOT IN'} ({marks}))"
        if not isinstance(value, str):
            raise QueryError("constraints on '_uniqueid': operand must be a string")
        self.params.append(value)
        return f"(('{self.uid_prefix}.' || {col} || '.0') {OPS[op]} ?)"


def compile_constraints(constraints: Any, alias: str, uid_prefix: int) -> tuple[str, list[Any]]:
    c = Compiler(alias, uid_prefix)
    sql = c.compile(constraints)
    return sql, c.params
