"""Metadata values and filters: ``str``, ``float``, ``bool`` or :class:`datetime.datetime` (the API's
``date_value``; ints are sent as numbers and come back as floats), to and from the API's ``Value``, and
``where`` filters as its ``Condition`` list."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from typing import Any, TypeAlias

import numpy as np

from moments.v1 import moments_pb2 as pb

MetaValue: TypeAlias = str | float | bool | datetime
#: ``{key: value}`` (==), ``{key: (op, value)}``, ``{key: [v1, v2]}`` (in), or ``[(key, op, value), ...]``
#: when one key needs several conditions (e.g. a range).
Where: TypeAlias = Mapping[str, Any] | Iterable[tuple[str, str, Any]]

OPERATORS: dict[str, int] = {
    "==": pb.Condition.EQ,
    "=": pb.Condition.EQ,
    "eq": pb.Condition.EQ,
    "!=": pb.Condition.NE,
    "ne": pb.Condition.NE,
    "<": pb.Condition.LT,
    "lt": pb.Condition.LT,
    "<=": pb.Condition.LE,
    "le": pb.Condition.LE,
    ">": pb.Condition.GT,
    "gt": pb.Condition.GT,
    ">=": pb.Condition.GE,
    "ge": pb.Condition.GE,
    "in": pb.Condition.IN,
}


# ----------------------------------------------------------------------------------------------- values


def to_value(value: Any) -> pb.Value:
    """A Python value as the API's typed ``Value``."""
    if isinstance(value, pb.Value):
        return value
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int | float | np.integer | np.floating):
        return pb.Value(number_value=float(value))
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return pb.Value(date_value=value.isoformat())
    if isinstance(value, date):
        return pb.Value(date_value=datetime(value.year, value.month, value.day, tzinfo=UTC).isoformat())
    if isinstance(value, str):
        return pb.Value(string_value=value)
    raise TypeError(f"a metadata value must be str, int, float, bool or datetime, not {type(value).__name__}")


def from_value(value: pb.Value) -> MetaValue:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "date_value":
        try:
            return datetime.fromisoformat(value.date_value)
        except ValueError:
            return value.date_value
    return value.string_value


def metadata_dict(metadata: Mapping[str, pb.Value]) -> dict[str, MetaValue]:
    return {key: from_value(metadata[key]) for key in sorted(metadata)}


def json_value(value: MetaValue) -> str | float | bool:
    """A metadata value for JSON output (dates as RFC 3339 strings)."""
    return value.isoformat() if isinstance(value, datetime) else value


def conditions(where: Where | None) -> list[pb.Condition]:
    """``where`` (see :data:`Where`) as the API's conditions."""
    if not where:
        return []
    triples: list[tuple[str, str, Any]] = []
    if isinstance(where, Mapping):
        for key, spec in where.items():
            if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and spec[0].lower() in OPERATORS:
                triples.append((key, spec[0], spec[1]))
            elif isinstance(spec, list | set | frozenset):
                triples.append((key, "in", list(spec)))
            else:
                triples.append((key, "==", spec))
    else:
        for item in where:
            key, op, val = item
            triples.append((key, op, val))
    out = []
    for key, op, val in triples:
        code = OPERATORS.get(op.lower())
        if code is None:
            raise ValueError(f"unknown operator {op!r} for {key!r}; one of ==, !=, <, <=, >, >=, in")
        if code == pb.Condition.IN:
            items = list(val) if isinstance(val, list | tuple | set | frozenset) else [val]
            if not items:
                raise ValueError(f"'in' needs at least one value for {key!r}")
            values = [to_value(v) for v in items]
        else:
            values = [to_value(val)]
        out.append(pb.Condition(key=key, op=code, values=values))  # type: ignore[arg-type]
    return out
