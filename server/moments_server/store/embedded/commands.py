"""Command dispatch: one handler per ApertureDB command, run inside a transaction (`Tx`).

Each handler validates its body (unknown keys are refused by name), reads or writes through the
transaction and returns the command's response object with keys in the order the server emits them
(sorted). A refused command raises `QueryError`, which aborts the whole query. The handlers live in
cmd_objects.py (entities, media, clips), cmd_connections.py, cmd_descriptors.py and cmd_admin.py;
what they share is in tx.py (the transaction), params.py, filters.py, rows.py, responses.py and writes.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .cmd_admin import create_index, get_indexes, get_schema, get_status, remove_index
from .cmd_connections import add_connection, delete_connection, find_connection, update_connection
from .cmd_descriptors import (
    add_descriptor,
    add_descriptor_set,
    delete_descriptor_set,
    find_descriptor,
    find_descriptor_set,
)
from .cmd_objects import add_object, delete_objects, find_objects, update_objects
from .errors import QueryError
from .media import IN_RANGE_KEYS
from .params import check_keys

if TYPE_CHECKING:
    from .tx import Tx

FIND_KEYS = {
    "_ref",
    "constraints",
    "is_connected_to",
    "results",
    "blobs",
    "unique",
    "sort",
    "limit",
    "offset",
    "uniqueids",
    "group_by_source",
}
ADD_KEYS = {"_ref", "properties", "if_not_found", "connect"}
UPDATE_KEYS = {"_ref", "ref", "constraints", "properties", "remove_props", "is_connected_to"}
DELETE_KEYS = {"_ref", "ref", "constraints", "is_connected_to"}

READ_ONLY = {
    "FindEntity",
    "FindImage",
    "FindVideo",
    "FindClip",
    "FindBlob",
    "FindDescriptor",
    "FindDescriptorSet",
    "FindConnection",
    "FindBoundingBox",
    "FindPolygon",
    "FindFrame",
    "GetSchema",
    "GetStatus",
    "GetIndexes",
}


def validate(commands: Any) -> list[str]:
    if not isinstance(commands, list) or not commands:
        raise QueryError("A query must be a non-empty JSON array of commands")
    names = []
    for i, c in enumerate(commands):
        if not isinstance(c, dict) or len(c) != 1:
            raise QueryError(f"Command {i}: must be an object with exactly one command name")
        name = next(iter(c))
        if name not in HANDLERS:
            if name in ("Authenticate", "RefreshToken"):
                raise QueryError(f"Command {i}: {name} must be sent alone, over the wire protocol")
            raise QueryError(f"Command {i}: unsupported command {name!r}")
        if not isinstance(c[name], dict):
            raise QueryError(f"Command {i}: {name} takes an object")
        names.append(name)
    return names


def run(tx: Tx, name: str, body: dict[str, Any]) -> dict[str, Any]:
    handler, allowed = HANDLERS[name]
    check_keys(body, allowed, name)
    return handler(tx, name, body)


def _uniq(keys: set[str], *more: str) -> set[str]:
    return keys | set(more)


H = Callable[["Tx", str, dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, tuple[H, set[str]]] = {
    "AddEntity": (add_object, _uniq(ADD_KEYS, "class")),
    "FindEntity": (find_objects, _uniq(FIND_KEYS, "with_class")),
    "UpdateEntity": (update_objects, _uniq(UPDATE_KEYS, "with_class")),
    "DeleteEntity": (delete_objects, _uniq(DELETE_KEYS, "with_class")),
    "AddConnection": (add_connection, {"class", "src", "dst", "properties", "if_not_found", "_ref"}),
    "FindConnection": (
        find_connection,
        {"with_class", "constraints", "results", "_ref", "src", "dst", "limit", "uniqueids"},
    ),
    "UpdateConnection": (
        update_connection,
        {"with_class", "constraints", "properties", "remove_props", "ref", "_ref", "src", "dst"},
    ),
    "DeleteConnection": (delete_connection, {"with_class", "constraints", "ref", "_ref", "src", "dst"}),
    "AddImage": (add_object, ADD_KEYS),
    "FindImage": (find_objects, FIND_KEYS),
    "UpdateImage": (update_objects, UPDATE_KEYS),
    "DeleteImage": (delete_objects, DELETE_KEYS),
    "AddVideo": (add_object, ADD_KEYS),
    "FindVideo": (find_objects, FIND_KEYS),
    "UpdateVideo": (update_objects, UPDATE_KEYS),
    "DeleteVideo": (delete_objects, DELETE_KEYS),
    "AddBlob": (add_object, ADD_KEYS),
    "FindBlob": (find_objects, FIND_KEYS),
    "UpdateBlob": (update_objects, UPDATE_KEYS),
    "DeleteBlob": (delete_objects, DELETE_KEYS),
    "AddClip": (
        add_object,
        _uniq(ADD_KEYS, "video_ref", "frame_number_range", "time_offset_range", "time_fraction_range"),
    ),
    "FindClip": (find_objects, _uniq(FIND_KEYS, "video_ref", *IN_RANGE_KEYS)),
    "UpdateClip": (update_objects, UPDATE_KEYS),
    "DeleteClip": (delete_objects, DELETE_KEYS),
    "AddDescriptorSet": (add_descriptor_set, {"name", "dimensions", "engine", "metric", "properties", "_ref"}),
    "FindDescriptorSet": (
        find_descriptor_set,
        _uniq(FIND_KEYS, "with_name", "name", "set", "counts", "dimensions", "engines", "metrics"),
    ),
    "DeleteDescriptorSet": (delete_descriptor_set, _uniq(DELETE_KEYS, "with_name")),
    "AddDescriptor": (add_descriptor, _uniq(ADD_KEYS, "set", "label")),
    "FindDescriptor": (find_descriptor, _uniq(FIND_KEYS, "set", "k_neighbors", "knn_first", "distances", "labels")),
    "UpdateDescriptor": (update_objects, UPDATE_KEYS),
    "DeleteDescriptor": (delete_objects, _uniq(DELETE_KEYS, "set")),
    # Remove-only: remove_all_objects sends these; no command here creates such objects.
    "DeleteBoundingBox": (delete_objects, DELETE_KEYS),
    "DeletePolygon": (delete_objects, DELETE_KEYS),
    "DeleteFrame": (delete_objects, DELETE_KEYS),
    "CreateIndex": (create_index, {"target", "class", "property", "kind"}),
    "RemoveIndex": (remove_index, {"target", "class", "property", "kind"}),
    "GetIndexes": (get_indexes, {"target", "class", "property", "kind"}),
    "GetSchema": (get_schema, {"refresh"}),  # refresh: accepted, the schema is always current
    "GetStatus": (get_status, set()),
}
