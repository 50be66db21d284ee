"""Property values: validation, the stored form, and the form echoed back.

ApertureDB property types are string, number (int or float), boolean and date (`{"_date": ISO}`).
Dates are stored as `{"_date": <as given>, "_t": <epoch seconds>}` so constraints compare instants
(`_t`) while responses echo the string as it was given (`{"_date": ...}`; the exact server echo is
OPEN in SEMANTICS.md).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from .errors import QueryError


def parse_date(text: Any) -> float:
    if not isinstance(text, str):
        raise QueryError(f"_date must be a string, got {json_type_name(text)}")
    s = text.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError as e:
        raise QueryError(f"Invalid _date {text!r}: {e}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def json_type_name(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


INT_MIN, INT_MAX = -(1 << 63), (1 << 63) - 1


def encode_value(key: str, v: Any) -> Any:
    """Validate one user property value and return its stored form."""
    if isinstance(v, float) and not math.isfinite(v):
        raise QueryError(f"Property {key!r}: {v} is not a finite number")
    if isinstance(v, int) and not isinstance(v, bool) and not INT_MIN <= v <= INT_MAX:
        raise QueryError(f"Property {key!r}: integer {v} is outside the 64-bit range")
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, dict) and set(v) == {"_date"}:
        return {"_date": v["_date"], "_t": parse_date(v["_date"])}
    raise QueryError(
        f"Property {key!r}: unsupported value type {json_type_name(v)} "
        '(expected string, number, boolean or {"_date": ...})'
    )


_SCALARS = (str, int, float, bool, type(None))


def encode_properties(props: Any) -> dict[str, Any]:
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise QueryError(f"properties must be an object, got {json_type_name(props)}")
    # Fast path (the ingest hot loop): plain scalar values and ordinary names.
    for k, v in props.items():
        t = type(v)
        if t not in _SCALARS or not k or k[0] == "_" or '"' in k:
            break
        if (t is float and not math.isfinite(v)) or (t is int and not INT_MIN <= v <= INT_MAX):
            break
    else:
        return dict(props)
    out: dict[str, Any] = {}
    for k, v in props.items():
        if k.startswith("_"):
            raise QueryError(f"Property {k!r}: names starting with '_' are reserved")
        if '"' in k or not k:
            raise QueryError(f"Property {k!r}: invalid property name")
        out[k] = encode_value(k, v)
    return out


def decode_value(v: Any) -> Any:
    if isinstance(v, dict) and "_date" in v:
        return {"_date": v["_date"]}
    return v
