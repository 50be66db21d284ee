"""Command parameters: typed values (`limit`, `offset`, flags), the `results` block, `sort`, and the
response's key order."""

from __future__ import annotations

from typing import Any

from . import jsonio
from .errors import QueryError
from .properties import json_type_name


def sorted_keys(d: dict[str, Any]) -> dict[str, Any]:
    return dict(sorted(d.items()))


def int_param(body: dict[str, Any], key: str, cmd: str, default: int | None = None, minimum: int = 0) -> Any:
    v = body.get(key, default)
    if v is None:
        return None
    if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
        raise QueryError(f"{cmd}: '{key}' must be an integer >= {minimum}, got {v!r}")
    return v


def bool_param(body: dict[str, Any], key: str, cmd: str) -> bool:
    v = body.get(key, False)
    if not isinstance(v, bool):
        raise QueryError(f"{cmd}: '{key}' must be a boolean, got {json_type_name(v)}")
    return v


def remove_props_param(body: dict[str, Any], cmd: str) -> list[str]:
    """An update's `remove_props`: property names, none of them reserved (`_...`)."""
    remove = body.get("remove_props", [])
    if not isinstance(remove, list) or not all(isinstance(k, str) for k in remove):
        raise QueryError(f"{cmd}: remove_props must be an array of property names")
    if any(k.startswith("_") for k in remove):
        raise QueryError(f"{cmd}: remove_props cannot remove reserved properties")
    return remove


def json_ids(ids: list[int]) -> str:
    return jsonio.dumps(ids)


def check_keys(spec: dict[str, Any], allowed: set[str], where: str) -> None:
    """Refuse a parameter of ``spec`` outside ``allowed`` (``where``: the command, and the field within it)."""
    extra = spec.keys() - allowed
    if extra:
        raise QueryError(f"{where}: unsupported parameter {sorted(extra)[0]!r}")


def results_spec(body: dict[str, Any], cmd: str) -> dict[str, Any]:
    r = body.get("results", {})
    if not isinstance(r, dict):
        raise QueryError(f"{cmd}: results must be an object")
    check_keys(r, {"list", "all_properties", "count", "limit", "sort", "group_by_source", "group"}, f"{cmd}: results")
    if "list" in r and (not isinstance(r["list"], list) or not all(isinstance(k, str) for k in r["list"])):
        raise QueryError(f"{cmd}: results.list must be an array of property names")
    for k in ("all_properties", "count", "group_by_source"):
        if k in r and not isinstance(r[k], bool):
            raise QueryError(f"{cmd}: results.{k} must be a boolean")
    if "group" in r:
        g = r["group"]
        if not isinstance(g, list) or not g or not all(isinstance(k, str) for k in g):
            raise QueryError(f"{cmd}: results.group must be a non-empty array of property names")
        if body.get("group_by_source") or r.get("group_by_source"):
            raise QueryError(f"{cmd}: group_by_source cannot be combined with group")
    return r


def sort_spec(body: dict[str, Any], results: dict[str, Any], cmd: str) -> tuple[str, bool] | None:
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


def wants_props(r: dict[str, Any]) -> bool:
    return bool(r.get("all_properties")) or "list" in r
