"""ApertureDB's framing and its one protobuf message, coded by hand (no SDK needed to serve).

Frame: `uint32` length in native byte order (`'@I'`), then the body. Body: proto3
`queryMessage { string json = 1; repeated bytes blobs = 2; string token = 3; }`.
"""

from __future__ import annotations

import struct

LEN = struct.Struct("@I")
HELLO = struct.Struct("@II")
PROTOCOL_VERSION = 1
PROTOCOL_TCP = 1
PROTOCOL_SSL = 2


class ProtocolError(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtocolError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtocolError("varint too long")


def decode_query(buf: bytes) -> tuple[str, list[bytes], str]:
    """-> (json, blobs, token); ProtocolError on anything that is not a valid queryMessage."""
    json_s, token = "", ""
    blobs: list[bytes] = []
    pos = 0
    n = len(buf)
    while pos < n:
        key, pos = _varint(buf, pos)
        field, wt = key >> 3, key & 7
        if field == 0:
            raise ProtocolError("field number 0")
        if wt == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > n:
                raise ProtocolError("length-delimited field runs past the message")
            chunk = buf[pos : pos + ln]
            pos += ln
            try:
                if field == 1:
                    json_s = chunk.decode("utf-8")
                elif field == 3:
                    token = chunk.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ProtocolError(f"invalid UTF-8 in string field {field}") from e
            if field == 2:
                blobs.append(bytes(chunk))
        elif field in (1, 2, 3):
            raise ProtocolError(f"field {field} has wire type {wt}")
        elif wt == 0:
            _, pos = _varint(buf, pos)
        elif wt == 1:
            pos += 8
        elif wt == 5:
            pos += 4
        else:
            raise ProtocolError(f"unsupported wire type {wt}")
        if pos > n:
            raise ProtocolError("truncated field")
    return json_s, blobs, token


def _enc_varint(v: int) -> bytes:
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode_query(json_s: str, blobs: list[bytes], token: str = "") -> bytes:
    parts: list[bytes] = []
    if json_s:
        j = json_s.encode("utf-8")
        parts += [b"\x0a", _enc_varint(len(j)), j]
    for b in blobs:
        parts += [b"\x12", _enc_varint(len(b)), b]
    if token:
        t = token.encode("utf-8")
        parts += [b"\x1a", _enc_varint(len(t)), t]
    return b"".join(parts)
