"""Search filters → ApertureDB constraints, validated strictly."""

from __future__ import annotations

import difflib
import math
from typing import Any

from moments_server.catalog.model import COMPLETE, METADATA_KEY, VIDEO_ID, value_type
from moments_server.config import Settings
from moments_server.errors import InvalidArgument
from moments_server.service.requests import Filters, Op
from moments_server.service.values import short, to_property

# An unknown key's error names at most this many known keys (the closest first): the message travels in
# an 8 KiB gRPC header.
SUGGESTED_KEYS = 5


def unknown_key_message(where: str, key: str, known: dict[str, str]) -> str:
    if key == "video_id":
        return (
            f"{where}: video_id is not caller metadata; to search some videos only, set filters.video_ids "
            "(CLI: --video ID, repeatable)"
        )
    if not known:
        return f"{where}: no stored video has metadata key {key!r} (no video has metadata yet)"
    close = difflib.get_close_matches(key, list(known), n=SUGGESTED_KEYS, cutoff=0.6)
    shown = close + [k for k in sorted(known) if k not in close][: SUGGESTED_KEYS - len(close)]
    more = f", and {len(known) - len(shown)} more" if len(known) > len(shown) else ""
    hint = "did you mean" if close else "known keys include"
    return f"{where}: no stored video has metadata key {key!r} ({len(known)} known; {hint}: {', '.join(shown)}{more})"


def build_constraints(
    filters: Filters,
    known: dict[str, str],
    *,
    max_video_ids: int = Settings.model_fields["max_filter_video_ids"].default,
    max_conditions: int = Settings.model_fields["max_filter_conditions"].default,
) -> dict[str, list[Any]] | None:
    """`known` maps the caller metadata keys seen on stored videos to their value type."""
    constraints: dict[str, list[Any]] = {}
    if filters.video_ids:
        if len(filters.video_ids) > max_video_ids:
            raise InvalidArgument(f"filters.video_ids holds {len(filters.video_ids)} ids; at most {max_video_ids}")
        for vid in filters.video_ids:
            if not VIDEO_ID.match(vid):
                raise InvalidArgument(f"filters.video_ids: {short(vid)} is not a valid video id")
        constraints["video_id"] = ["in", list(dict.fromkeys(filters.video_ids))]
    start, end = filters.start_s, filters.end_s
    for name, given in (("start_s", start), ("end_s", end)):
        if given is not None and not math.isfinite(given):
            raise InvalidArgument(f"filters.{name} must be a finite number of seconds, got {given}")
    if start is not None and start < 0:
        raise InvalidArgument("filters.start_s must be >= 0")
    if start is not None and end is not None and end < start:
        raise InvalidArgument(f"filters.end_s ({end}) is before filters.start_s ({start})")
    frame_range: list[Any] = []
    if start is not None:
        frame_range += [">=", start]
    if end is not None:
        frame_range += ["<=", end]
    if frame_range:
        constraints["frame_s"] = frame_range
    if filters.complete_only:
        constraints["state"] = ["==", COMPLETE]
    if len(filters.conditions) > max_conditions:
        raise InvalidArgument(f"at most {max_conditions} conditions")
    for i, cond in enumerate(filters.conditions):
        where = f"filters.conditions[{i}]"
        if not METADATA_KEY.match(cond.key):
            raise InvalidArgument(f"{where}: {short(cond.key)} is not a metadata key")
        if cond.key not in known:
            raise InvalidArgument(unknown_key_message(where, cond.key, known))
        if cond.op is None:
            raise InvalidArgument(f"{where}: op must be one of EQ, NE, LT, LE, GT, GE, IN")
        values = [to_property(v, where) for v in cond.values]
        if cond.op is Op.IN:
            if not values:
                raise InvalidArgument(f"{where}: IN needs at least one value")
        elif len(values) != 1:
            raise InvalidArgument(f"{where}: {cond.op.name} takes exactly one value, got {len(values)}")
        expected = known[cond.key]
        for v in values:
            if value_type(v) != expected:
                raise InvalidArgument(
                    f"{where}: {cond.key!r} holds {expected} values, the condition gives a {value_type(v)}"
                )
        if expected == "bool" and cond.op not in (Op.EQ, Op.NE, Op.IN):
            raise InvalidArgument(f"{where}: booleans compare only with EQ, NE or IN")
        op = cond.op.value
        constraints.setdefault(cond.key, []).extend([op, values] if op == "in" else [op, values[0]])
    return constraints or None
