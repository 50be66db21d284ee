"""Conversions between the API's typed metadata values and ApertureDB property values."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.model import METADATA_KEY, RESERVED_KEYS, PropertyValue
from moments_server.errors import InvalidArgument


def check_key(key: str) -> None:
    if not METADATA_KEY.match(key):
        raise InvalidArgument(
            f"metadata key {key!r} is not allowed: use 1-64 characters of [A-Za-z0-9_.-] starting with a letter"
        )
    if key in RESERVED_KEYS:
        raise InvalidArgument(
            f"metadata key {key!r} is reserved by the server; reserved: {', '.join(sorted(RESERVED_KEYS))}"
        )


def to_property(value: pb.Value, where: str) -> PropertyValue:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return value.number_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "date_value":
        try:
            datetime.fromisoformat(value.date_value)
        except ValueError as e:
            raise InvalidArgument(f"{where}: date_value {value.date_value!r} is not an RFC 3339 timestamp") from e
        return {"_date": value.date_value}
    raise InvalidArgument(f"{where}: the value has no kind set")


def from_property(value: Any) -> pb.Value:
    if isinstance(value, bool):
        return pb.Value(bool_value=value)
    if isinstance(value, int | float):
        return pb.Value(number_value=float(value))
    if isinstance(value, dict) and "_date" in value:
        return pb.Value(date_value=str(value["_date"]))
    return pb.Value(string_value=str(value))


def metadata_from_request(metadata: Mapping[str, pb.Value]) -> dict[str, PropertyValue]:
    out = {}
    for key, value in metadata.items():
        check_key(key)
        out[key] = to_property(value, f"metadata[{key!r}]")
    return out


def fill_metadata(target: Any, metadata: Mapping[str, Any]) -> None:
    for key, value in metadata.items():
        target[key].CopyFrom(from_property(value))
