"""Hypothesis strategies shared by the fuzz targets: API values, and mutations of real files' bytes."""

from __future__ import annotations

import struct
import zlib

from hypothesis import strategies as st

from moments.v1 import moments_pb2 as pb


class Corpus(dict[str, bytes]):
    """Named sample files; a short repr, since hypothesis prints a failing test's arguments."""

    def __repr__(self) -> str:
        return f"Corpus({sorted(self)})"


KEYS = st.one_of(
    st.sampled_from(["camera", "floor", "outdoor", "video_id", "frame_s", "_uniqueid", "", "a" * 65, "x.y-z_1"]),
    st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,63}", fullmatch=True),
    st.text(max_size=80),
)
FLOATS = st.floats(allow_nan=True, allow_infinity=True)
DATES = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.sampled_from(["2026-01-01T00:00:00Z", "2026-13-01", "not a date", "", "9999-12-31T23:59:59+14:00"]),
    st.text(max_size=40),
)
VALUES = st.one_of(
    st.builds(pb.Value, string_value=st.text(max_size=64)),
    st.builds(pb.Value, number_value=FLOATS),
    st.builds(pb.Value, bool_value=st.booleans()),
    st.builds(pb.Value, date_value=DATES),
    st.just(pb.Value()),  # no kind set
)
VIDEO_IDS = st.one_of(st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True), st.text(max_size=140))


def finite(v: pb.Value) -> bool:
    import math

    return v.WhichOneof("kind") != "number_value" or math.isfinite(v.number_value)


@st.composite
def mutated(draw: st.DrawFn, corpus: list[bytes]) -> tuple[str, bytes]:
    """(what was done, the bytes): a real file truncated, bit-flipped, overwritten, spliced or emptied."""
    data = bytearray(draw(st.sampled_from(corpus)))
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "splice", "empty", "random", "intact"]))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 16))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "overwrite":
        i = draw(st.integers(0, len(data) - 1))
        patch = draw(st.binary(min_size=1, max_size=64))
        data[i : i + len(patch)] = patch
    elif kind == "splice":  # one file's head on another's body: a wrong container for the payload
        other = draw(st.sampled_from(corpus))
        cut = draw(st.integers(0, min(len(data), len(other)) - 1))
        data = data[:cut] + other[cut:]
    elif kind == "empty":
        data = bytearray()
    elif kind == "random":
        data = bytearray(draw(st.binary(max_size=4096)))
    return kind, bytes(data)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """The IHDR's width and height replaced, its CRC recomputed (so a decoder believes it)."""
    assert png[12:16] == b"IHDR"
    ihdr = struct.pack(">II", width, height) + png[24:29]
    crc = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return png[:16] + ihdr + crc + png[33:]


def patch_jpeg_size(jpeg: bytes, width: int, height: int) -> bytes:
    """Every baseline/progressive SOF marker's dimensions replaced."""
    out = bytearray(jpeg)
    for marker in (b"\xff\xc0", b"\xff\xc2"):
        i = out.find(marker)
        while i != -1:
            out[i + 5 : i + 9] = struct.pack(">HH", height, width)
            i = out.find(marker, i + 2)
    return bytes(out)
