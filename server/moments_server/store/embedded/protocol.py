"""ApertureDB's framing and its one protobuf message (`queryMessage`, generated from
protos/aperturedb/queryMessage.proto by `make protos`: no SDK needed to serve).

Frame: `uint32` length in native byte order (`'@I'`), then the body. Body: proto3
`queryMessage { string json = 1; repeated bytes blobs = 2; string token = 3; }`.
"""

from __future__ import annotations

import struct

from google.protobuf.message import DecodeError
from google.protobuf.unknown_fields import UnknownFieldSet

from .aperturedb.queryMessage_pb2 import queryMessage

LEN = struct.Struct("@I")
HELLO = struct.Struct("@II")
PROTOCOL_VERSION = 1
PROTOCOL_TCP = 1
PROTOCOL_SSL = 2
_KNOWN_FIELDS = (1, 2, 3)
_GROUP_WIRE_TYPES = (3, 4)


class ProtocolError(Exception):
    pass


def decode_query(buf: bytes) -> tuple[str, list[bytes], str]:
    """-> (json, blobs, token); ProtocolError on anything that is not a valid queryMessage.

    Stricter than the protobuf parser, as ApertureDB's peers expect: a known field sent with another
    wire type (which the parser keeps as an unknown field) and groups are refused, not skipped."""
    msg = queryMessage()
    try:
        msg.ParseFromString(buf)
    except DecodeError as e:
        raise ProtocolError(f"not a queryMessage: {e}") from None
    for f in UnknownFieldSet(msg):
        if f.field_number in _KNOWN_FIELDS:
            raise ProtocolError(f"field {f.field_number} has wire type {f.wire_type}")
        if f.wire_type in _GROUP_WIRE_TYPES:
            raise ProtocolError(f"unsupported wire type {f.wire_type}")
    return msg.json, list(msg.blobs), msg.token


def encode_query(json_s: str, blobs: list[bytes], token: str = "") -> bytes:
    return queryMessage(json=json_s, blobs=blobs, token=token).SerializeToString()
