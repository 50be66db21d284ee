"""Property-based tests (hypothesis) of the edge: the filter translator, the ingest header and its metadata,
and the query image decoder. Whatever comes in is answered with a precise status (never INTERNAL) and a
short message (it travels in an 8 KiB gRPC header). Quick: a few hundred inputs each."""

from __future__ import annotations

import io
import random
import struct
import zlib

import grpc
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from moments.v1 import moments_pb2 as pb
from moments_server.config import Settings
from moments_server.errors import BadImage, MomentsError
from moments_server.framing import Framing
from moments_server.pictures import check_image, decode_image
from moments_server.service.filters import build_constraints
from moments_server.service.ingest_checks import validate_header
from moments_server.service.values import metadata_from_request
from moments_server.transport.requests import filters as filters_from_wire
from moments_server.transport.requests import ingest_spec
from moments_server.transport.status import status_of

QUICK = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMITS = Settings(
    max_metadata_keys=8, max_metadata_value_bytes=64, max_metadata_bytes=256, max_image_pixels=4096 * 4096
)
KNOWN = {"camera": "string", "floor": "number", "outdoor": "bool", "shot": "date"}
MAX_MESSAGE = 600

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80)
# Non-finite values drawn often (hypothesis's own floats rarely give a NaN).
floats = st.one_of(st.sampled_from([float("nan"), float("inf"), float("-inf"), -0.0]), st.floats())
keys = st.one_of(st.sampled_from([*KNOWN, "video_id", "fps", "_x", ""]), text)
values = st.one_of(
    st.builds(lambda v: pb.Value(string_value=v), text),
    st.builds(lambda v: pb.Value(number_value=v), floats),
    st.builds(lambda v: pb.Value(bool_value=v), st.booleans()),
    st.builds(lambda v: pb.Value(date_value=v), st.one_of(text, st.just("2026-01-02T03:04:05+00:00"))),
    st.just(pb.Value()),
)


def assert_precise(error: BaseException) -> None:
    code, message = status_of(error)
    assert code != grpc.StatusCode.INTERNAL, (type(error), error)
    assert message and len(message) < MAX_MESSAGE, len(message)


TYPED = {
    "camera": st.builds(lambda v: pb.Value(string_value=v), text),
    "floor": st.builds(lambda v: pb.Value(number_value=v), floats),
    "outdoor": st.builds(lambda v: pb.Value(bool_value=v), st.booleans()),
    "shot": st.builds(lambda v: pb.Value(date_value=v), st.just("2026-01-02T03:04:05+00:00")),
}
arbitrary_conditions = st.builds(
    lambda k, op, vs: pb.Condition(key=k, op=op, values=vs),
    keys,
    st.integers(min_value=-3, max_value=12),
    st.lists(values, max_size=4),
)


@st.composite
def typed_conditions(draw: st.DrawFn) -> pb.Condition:
    """Mostly well-formed: a known key, an op, values of its type (numbers may be NaN or infinite)."""
    key = draw(st.sampled_from(sorted(TYPED)))
    op = draw(st.integers(min_value=1, max_value=7))
    n = draw(st.integers(min_value=1, max_value=3)) if op == pb.Condition.IN else 1
    return pb.Condition(key=key, op=op, values=[draw(TYPED[key]) for _ in range(n)])


conditions = st.one_of(typed_conditions(), arbitrary_conditions)


@st.composite
def search_filters(draw: st.DrawFn) -> pb.SearchFilters:
    f = pb.SearchFilters(
        video_ids=draw(
            st.one_of(
                st.lists(st.from_regex(r"[A-Za-z0-9._:-]{1,10}", fullmatch=True), max_size=3),
                st.lists(text, max_size=3),
            )
        ),
        conditions=draw(st.lists(conditions, max_size=3)),
    )
    if draw(st.booleans()):
        f.start_s = draw(floats)
    if draw(st.booleans()):
        f.end_s = draw(floats)
    return f


@QUICK
@given(search_filters())
def test_any_filters_become_constraints_or_a_precise_error(filters: pb.SearchFilters) -> None:
    try:
        out = build_constraints(filters_from_wire(filters), KNOWN)
    except MomentsError as e:
        assert_precise(e)
        return
    assert out is None or isinstance(out, dict)
    for key, ops in (out or {}).items():
        assert key in (*KNOWN, "video_id", "frame_s") and ops
        for v in ops[1::2]:
            assert not isinstance(v, float) or np.isfinite(v)


@st.composite
def headers(draw: st.DrawFn) -> pb.IngestHeader:
    """Mostly well-formed headers (so that the metadata is reached), each field sometimes anything."""
    h = pb.IngestHeader(
        video_id=draw(st.one_of(st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True), text)),
        filename=draw(text),
        sha256=draw(st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{64}", fullmatch=True), text)),
        size_bytes=draw(st.one_of(st.integers(min_value=0, max_value=10**6), st.integers(0, 2**64 - 1))),
    )
    h.sampling.fps = draw(st.one_of(st.floats(min_value=0, max_value=30), floats))
    h.sampling.max_frames = draw(st.one_of(st.integers(0, 1000), st.integers(min_value=0, max_value=2**32 - 1)))
    good_keys = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
    mostly_good = st.one_of(
        st.builds(lambda v: pb.Value(number_value=v), floats),
        st.builds(lambda v: pb.Value(string_value=v), st.text(max_size=8)),
        values,
    )
    for k, v in draw(st.dictionaries(st.one_of(good_keys, keys), mostly_good, max_size=5)).items():
        h.metadata[k].CopyFrom(v)
    return h


@QUICK
@given(headers())
def test_any_ingest_header_is_taken_or_refused_precisely(header: pb.IngestHeader) -> None:
    try:
        spec = ingest_spec(header)
        validate_header(spec, LIMITS)
        metadata = metadata_from_request(spec.metadata, LIMITS)
    except MomentsError as e:
        assert_precise(e)
        return
    assert len(metadata) <= LIMITS.max_metadata_keys
    assert 0 <= header.sampling.fps <= LIMITS.max_fps  # NaN fails this too
    for v in metadata.values():
        assert not isinstance(v, float) or np.isfinite(v)


def _encoded(fmt: str, size: tuple[int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, format=fmt)
    return out.getvalue()


SEEDS = {fmt: _encoded(fmt, (40, 30), i) for i, fmt in enumerate(("PNG", "JPEG", "WEBP", "BMP", "GIF", "TIFF"))}


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    rnd = random.Random(draw(st.integers(min_value=0, max_value=2**32)))
    action = draw(st.sampled_from(["flip", "truncate", "splice", "raw", "header", "claim"]))
    if action == "claim":  # a well-formed PNG header claiming any size, with a tiny body (a decompression bomb)
        w, h = draw(st.integers(0, 2**31 - 1)), draw(st.integers(0, 2**31 - 1))
        ihdr = b"IHDR" + struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
        idat = b"IDAT" + zlib.compress(b"\0" * 256)
        data = bytearray(b"\x89PNG\r\n\x1a\n")
        for chunk in (ihdr, idat, b"IEND"):
            data += struct.pack(">I", len(chunk) - 4) + chunk + struct.pack(">I", zlib.crc32(chunk))
    elif action == "flip":
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    elif action == "truncate":
        data = data[: rnd.randrange(len(data))]
    elif action == "splice":
        at = rnd.randrange(len(data))
        data[at:at] = draw(st.binary(max_size=64))
    elif action == "raw":
        data = bytearray(draw(st.binary(max_size=256)))
    else:  # the header's size fields overwritten: claims of huge or zero dimensions
        for i in range(12, min(32, len(data))):
            data[i] = rnd.choice([0, 0xFF, rnd.randrange(256)])
    return bytes(data)


@QUICK
@given(mutated_images())
def test_any_query_image_decodes_or_is_refused_precisely(data: bytes) -> None:
    try:
        check_image(data, 1 << 20, LIMITS.max_image_pixels, "the query image")
        rgb = decode_image(data, Framing(32))
    except BadImage as e:
        assert_precise(e)
        return
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.uint8
