"""The filter translator in-process: any SearchFilters is translated to constraints the embedded store
compiles, or refused with INVALID_ARGUMENT and a short message; nothing else escapes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from moments.v1 import moments_pb2 as pb
from moments_server.errors import InvalidArgument
from moments_server.service.filters import build_constraints
from moments_server.store.embedded.constraints import compile_constraints
from moments_server.transport.requests import filters as filters_from_wire
from tests.fuzz.conftest import budget, record
from tests.fuzz.strategies import FLOATS, KEYS, VALUES, VIDEO_IDS

KNOWN = {"camera": "string", "floor": "number", "outdoor": "bool", "when": "date"}

CONDITIONS = st.builds(
    pb.Condition,
    key=st.one_of(st.sampled_from(sorted(KNOWN)), KEYS),
    op=st.one_of(st.sampled_from(list(pb.Condition.Op.values())), st.integers(-3, 20)),
    values=st.lists(VALUES, max_size=5),
)


@st.composite
def filters(draw: st.DrawFn) -> pb.SearchFilters:
    f = pb.SearchFilters(
        video_ids=draw(st.lists(VIDEO_IDS, max_size=4)), conditions=draw(st.lists(CONDITIONS, max_size=5))
    )
    if draw(st.booleans()):
        f.start_s = draw(FLOATS)
    if draw(st.booleans()):
        f.end_s = draw(FLOATS)
    return f


def _non_finite(f: pb.SearchFilters) -> bool:
    times = [f.start_s] if f.HasField("start_s") else []
    times += [f.end_s] if f.HasField("end_s") else []
    nums = [v.number_value for c in f.conditions for v in c.values if v.WhichOneof("kind") == "number_value"]
    return any(not math.isfinite(x) for x in times + nums)


@budget(quick=200, fuzz=6000)
@given(filters())
def test_filters_translate_or_invalid_argument(f: pb.SearchFilters) -> None:
    try:
        constraints = build_constraints(filters_from_wire(f), dict(KNOWN))
    except InvalidArgument as e:
        record("filters", "INVALID_ARGUMENT")
        assert 0 < len(str(e)) < 2048, str(e)
        return
    if constraints is not None:
        compile_constraints(constraints, "x", 1)  # the store understands what the translator made
    assert not _non_finite(f), f"NaN/Inf translated instead of refused: {f}"
    record("filters", "translated")


def test_nan_time_range_is_invalid_argument() -> None:
    f = pb.SearchFilters(start_s=math.nan)
    with pytest.raises(InvalidArgument):
        build_constraints(f, dict(KNOWN))
