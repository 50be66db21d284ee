"""Caller metadata values checked into ApertureDB property values, and the quoting of what callers sent."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING

from moments_server.catalog.model import METADATA_KEY, RESERVED_KEYS, PropertyValue
from moments_server.errors import InvalidArgument
from moments_server.service.requests import Value

if TYPE_CHECKING:
    from moments_server.config import Settings

# Error messages quote what the caller sent; gRPC carries them in an 8 KiB header, so quotes are cut short.
QUOTE_CHARS = 48
MAX_DATE_CHARS = 64


def short(text: str, limit: int = QUOTE_CHARS) -> str:
    """repr() of text, cut to about `limit` characters with the full length said."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def check_key(key: str, max_chars: int = 64) -> None:
    if len(key) > max_chars:
        raise InvalidArgument(f"metadata key {short(key)} is too long: keys have at most {max_chars} characters")
    if not METADATA_KEY.match(key):
        raise InvalidArgument(
            f"metadata key {short(key)} is not allowed: use 1-64 characters of [A-Za-z0-9_.-] starting with a letter"
        )
    if key in RESERVED_KEYS:
        raise InvalidArgument(
            f"metadata key {key!r} is reserved by the server; reserved: {', '.join(sorted(RESERVED_KEYS))}"
        )


def to_property(value: Value, where: str) -> PropertyValue:
    """The stored form of a caller's value: finite numbers, RFC 3339 dates."""
    if value is None:
        raise InvalidArgument(f"{where}: the value has no kind set")
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidArgument(f"{where}: number_value must be finite, got {value}")
        return value
    text = value["_date"]
    try:
        if len(text) > MAX_DATE_CHARS:
            raise ValueError("too long")
        datetime.fromisoformat(text)
    except ValueError as e:
        raise InvalidArgument(f"{where}: date_value {short(text)} is not an RFC 3339 timestamp") from e
    return value


def _value_bytes(value: Value) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, dict):
        return len(value["_date"].encode())
    return 8 if isinstance(value, int | float) and not isinstance(value, bool) else 1


def metadata_from_request(metadata: Mapping[str, Value], limits: Settings) -> dict[str, PropertyValue]:
    """The header's metadata, checked against the server's limits (Info.limits) before any byte is spooled:
    it is copied onto every frame, so one large value would weigh on every search that reaches the video."""
    if len(metadata) > limits.max_metadata_keys:
        raise InvalidArgument(
            f"metadata has {len(metadata)} keys; the server takes at most {limits.max_metadata_keys} per video"
        )
    out = {}
    total = 0
    for key, value in metadata.items():
        check_key(key, limits.max_metadata_key_chars)
        size = _value_bytes(value)
        if size > limits.max_metadata_value_bytes:
            raise InvalidArgument(
                f"metadata[{key!r}] is {size} bytes; values have at most {limits.max_metadata_value_bytes} bytes "
                "(keep large data elsewhere and store a reference)"
            )
        total += len(key) + size
        out[key] = to_property(value, f"metadata[{key!r}]")
    if total > limits.max_metadata_bytes:
        raise InvalidArgument(
            f"metadata is {total} bytes in all (keys and values); the server takes at most "
            f"{limits.max_metadata_bytes} per video"
        )
    return out
