"""Pure pieces of the search path: filters → constraints, moments folding, page tokens, time offsets."""

from __future__ import annotations

import pytest

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.catalog import Hit
from moments_server.catalog.model import time_offset
from moments_server.errors import InvalidArgument
from moments_server.service import filters as core_filters
from moments_server.service.moments import to_moments
from moments_server.service.replies import decode_page_token, encode_page_token
from moments_server.transport.requests import filters as from_wire

KNOWN = {"camera": "string", "floor": "number", "outdoor": "bool", "shot": "date"}
C = pb.Condition


def cond(key: str, op: int, *values: pb.Value) -> pb.Condition:
    return C(key=key, op=op, values=list(values))  # type: ignore[arg-type]


def build_constraints(filters: pb.SearchFilters, known: dict[str, str], **bounds: int) -> object:
    """Through the edge: protobuf filters converted by the transport, then checked by the core."""
    return core_filters.build_constraints(from_wire(filters), known, **bounds)


def s(v: str) -> pb.Value:
    return pb.Value(string_value=v)


def n(v: float) -> pb.Value:
    return pb.Value(number_value=v)


def test_filters_become_constraints() -> None:
    filters = pb.SearchFilters(
        video_ids=["a", "b", "a"],
        start_s=1.5,
        end_s=9,
        conditions=[
            cond("camera", C.IN, s("n"), s("s")),
            cond("floor", C.GE, n(1)),
            cond("floor", C.LT, n(4)),
            cond("outdoor", C.EQ, pb.Value(bool_value=True)),
            cond("shot", C.GT, pb.Value(date_value="2026-01-01T00:00:00+00:00")),
        ],
    )
    assert build_constraints(filters, KNOWN) == {
        "video_id": ["in", ["a", "b"]],
        "frame_s": [">=", 1.5, "<=", 9.0],
        "camera": ["in", ["n", "s"]],
        "floor": [">=", 1.0, "<", 4.0],
        "outdoor": ["==", True],
        "shot": [">", {"_date": "2026-01-01T00:00:00+00:00"}],
    }
    assert build_constraints(pb.SearchFilters(), KNOWN) is None


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        (pb.SearchFilters(conditions=[cond("nope", C.EQ, s("x"))]), "known keys include: camera, floor, outdoor, shot"),
        (pb.SearchFilters(conditions=[cond("floor", C.EQ, s("x"))]), "holds number values"),
        (pb.SearchFilters(conditions=[cond("floor", C.EQ, n(1), n(2))]), "exactly one value"),
        (pb.SearchFilters(conditions=[cond("camera", C.IN)]), "at least one value"),
        (pb.SearchFilters(conditions=[cond("outdoor", C.LT, pb.Value(bool_value=True))]), "booleans"),
        (pb.SearchFilters(conditions=[cond("camera", C.OP_UNSPECIFIED, s("x"))]), "op must be"),
        (pb.SearchFilters(conditions=[cond("bad key!", C.EQ, s("x"))]), "not a metadata key"),
        (pb.SearchFilters(video_ids=["has space"]), "not a valid video id"),
        (pb.SearchFilters(start_s=3, end_s=2), "before filters.start_s"),
        (pb.SearchFilters(start_s=-1), ">= 0"),
        (pb.SearchFilters(conditions=[cond("shot", C.GT, pb.Value(date_value="yesterday"))]), "RFC 3339"),
    ],
)
def test_bad_filters_say_what_is_wrong(filters: pb.SearchFilters, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        build_constraints(filters, KNOWN)


def hit(vid: str, start: float, score: float) -> Hit:
    return Hit(vid, start + 0.1, start, start + 1, score, {"k": vid})


def test_merge_adjacent_keeps_best_frame_and_splits_gaps() -> None:
    hits = [
        hit("a", 2, 0.9),
        hit("a", 3, 0.93),
        hit("a", 4, 0.5),
        hit("a", 7, 0.8),
        hit("b", 3, 0.85),
        hit("a", 8, 0.79),
    ]
    moments = to_moments(hits, None, merge=True, group=False)
    # a@4 is adjacent but scores far below the moment's best: it stays a moment of its own.
    assert [(m.video_id, m.start_s, m.end_s, m.best_frame_s, m.score) for m in moments] == [
        ("a", 2, 4, 3.1, 0.93),
        ("b", 3, 4, 3.1, 0.85),
        ("a", 7, 9, 7.1, 0.8),
        ("a", 4, 5, 4.1, 0.5),
    ]
    loose = to_moments(hits, None, merge=True, group=False, tolerance=1.0)
    assert [(m.start_s, m.end_s) for m in loose if m.video_id == "a"] == [(2, 5), (7, 9)]


def test_group_and_min_score() -> None:
    hits = [hit("a", 2, 0.9), hit("b", 3, 0.7), hit("a", 6, 0.95), hit("c", 1, 0.2)]
    grouped = to_moments(hits, 0.5, merge=False, group=True)
    assert [(m.video_id, m.start_s) for m in grouped] == [("a", 6), ("b", 3)]


def test_page_tokens_are_bound_to_their_query() -> None:
    token = encode_page_token(20, "abc")
    assert decode_page_token(token, "abc") == 20
    with pytest.raises(InvalidArgument, match="different query"):
        decode_page_token(token, "abd")
    with pytest.raises(InvalidArgument, match="malformed"):
        decode_page_token("!!!", "abc")


def test_time_offset_format() -> None:
    assert time_offset(0) == "00:00:00.000000"
    assert time_offset(3725.25) == "01:02:05.250000"


def test_an_unknown_key_error_stays_short_with_many_known_keys() -> None:
    known = {f"key_{i:04d}_{'x' * 40}": "string" for i in range(2000)}
    known["camera"] = "string"
    with pytest.raises(InvalidArgument) as err:
        build_constraints(pb.SearchFilters(conditions=[cond("camra", C.EQ, s("n"))]), known)
    message = str(err.value)
    assert len(message) < 600, len(message)  # was every key: over gRPC's 8 KiB header limit
    assert "'camra'" in message and "2001 known" in message and "camera" in message and "more" in message
    with pytest.raises(InvalidArgument) as err:
        build_constraints(pb.SearchFilters(conditions=[cond("video_id", C.EQ, s("a"))]), known)
    assert "filters.video_ids" in str(err.value) and "--video" in str(err.value)


def test_a_strip_of_an_image_is_cut_before_scaling() -> None:
    """A 1 x 1,753,216 PNG (found by the property tests) scaled by its short side needed gigabytes."""
    import io

    from PIL import Image

    from moments_server.framing import Framing
    from moments_server.pictures import decode_image

    out = io.BytesIO()
    Image.new("RGB", (2, 400_000), "red").save(out, format="PNG")
    rgb = decode_image(out.getvalue(), Framing(224))
    assert rgb.shape == (224, 224, 3) and tuple(rgb[112, 112]) == (255, 0, 0)
    square = io.BytesIO()
    Image.new("RGB", (300, 200), "blue").save(square, format="PNG")
    assert decode_image(square.getvalue(), Framing(224)).shape == (224, 224, 3)


def test_filter_bounds_come_from_the_settings() -> None:
    from moments_server.config import Settings

    conditions = [cond("camera", pb.Condition.EQ, s(f"c{i}")) for i in range(3)]
    three = pb.SearchFilters(conditions=conditions, video_ids=["a", "b"])
    assert build_constraints(three, KNOWN) is not None  # within the defaults (32 conditions, 1000 ids)
    with pytest.raises(InvalidArgument, match="at most 2 conditions"):
        build_constraints(three, KNOWN, max_conditions=2)
    with pytest.raises(InvalidArgument, match="at most 1"):
        build_constraints(three, KNOWN, max_video_ids=1)
    defaults = Settings.model_fields
    assert (defaults["max_filter_conditions"].default, defaults["max_filter_video_ids"].default) == (32, 1000)
