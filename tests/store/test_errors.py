"""Transactions and refusals: a failing command undoes the whole query (rows, vectors and blob files),
and every refusal has ApertureDB's error shape with a message that names the problem."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest

from moments_server.store.embedded import Engine


def vec(*v: float) -> bytes:
    return struct.pack(f"<{len(v)}f", *v)


@pytest.fixture
def db(engine: Engine) -> Engine:
    engine.query([{"AddDescriptorSet": {"name": "s", "dimensions": 2, "metric": "L2"}}])
    return engine


def err(engine: Engine, q: list[dict[str, Any]], blobs: list[bytes] | None = None) -> str:
    r, out = engine.query(q, blobs or [])
    assert isinstance(r, dict) and r["status"] == -1 and isinstance(r["info"], str), r
    assert out == []
    return str(r["info"])


def counts(engine: Engine) -> tuple[int, int, int, int]:
    c = engine._w
    return tuple(
        c.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[return-value]
        for t in ("objects", "conns", "vectors", "blobdata")
    )


def test_failing_second_command_leaves_nothing(db: Engine, mp4: bytes) -> None:
    before = counts(db)
    big = np.random.default_rng(1).bytes(400_000)  # stored as a file
    info = err(
        db,
        [
            {"AddBlob": {"_ref": 1, "properties": {"k": 1}}},
            {"AddDescriptor": {"set": "s", "connect": {"ref": 1, "class": "c"}}},
            {"AddEntity": {"class": "E", "properties": {"bad": [1, 2]}}},
        ],
        [big, vec(1, 2)],
    )
    assert "Property 'bad'" in info and "array" in info
    assert counts(db) == before
    assert db.blob_files.all_names() == set()
    r, _ = db.query([{"FindDescriptor": {"set": "s", "k_neighbors": 5}}], [vec(1, 2)])
    assert r == [{"FindDescriptor": {"returned": 0, "status": 0}}]
    assert db.sets.by_name["s"].index.ntotal == 0


def test_error_names_the_failed_command(db: Engine) -> None:
    r, _ = db.query([{"AddEntity": {"class": "T"}}, {"FindEntity": {"is_connected_to": {"ref": 99}}}])
    assert r == {
        "FailedCommand": {"FindEntity": {"is_connected_to": {"ref": 99}}},
        "info": "FindEntity: Reference does not exist: 99",
        "status": -1,
    }


@pytest.mark.parametrize(
    ("query", "blobs", "message"),
    [
        ([{"FindEntity": {"is_connected_to": {"ref": 3}}}], [], "Reference does not exist: 3"),
        (
            [{"AddEntity": {"class": "A", "_ref": 1}}, {"AddEntity": {"class": "B", "_ref": 1}}],
            [],
            "_ref 1 is already used",
        ),
        ([{"AddEntity": {"class": "A", "_ref": "x"}}], [], "'_ref' must be a positive integer"),
        ([{"AddEntity": {"class": "A", "connect": {"ref": 7, "class": "c"}}}], [], "Reference does not exist: 7"),
        ([{"AddDescriptor": {"set": "nope"}}], [vec(1, 2)], "DescriptorSet 'nope' does not exist"),
        ([{"FindDescriptor": {"set": "nope", "k_neighbors": 1}}], [vec(1, 2)], "DescriptorSet 'nope' does not exist"),
        ([{"AddDescriptor": {"set": "s"}}], [vec(1, 2, 3)], "has 12 bytes but set 's' has 2 dimensions"),
        ([{"FindDescriptor": {"set": "s", "k_neighbors": 1}}], [vec(1, 2, 3)], "not a multiple of 8"),
        ([{"AddDescriptor": {"set": "s"}}], [], "expects a blob but the query has only 0"),
        ([{"AddEntity": {"class": "A"}}], [b"x"], "has 1 blob(s) but its commands use 0"),
        ([{"FindEntity": {"constraints": {"age": ["~=", 3]}}}], [], "unknown operator '~='"),
        ([{"FindEntity": {"constraints": {"age": [">", 3, "<"]}}}], [], "[operator, value, ...] pairs"),
        ([{"FindEntity": {"constraints": {"age": ["in", 3]}}}], [], "'in' takes a non-empty array"),
        ([{"FindEntity": {"constraints": {"age": [">", [1]]}}}], [], "unsupported operand type array"),
        ([{"FindEntity": {"constraints": {"age": [">", True]}}}], [], "booleans only work with == and !="),
        ([{"FindEntity": {"constraints": {"any": []}}}], [], "'any' takes a non-empty object"),
        ([{"AddEntity": {"class": "A", "properties": {"_x": 1}}}], [], "names starting with '_' are reserved"),
        ([{"AddEntity": {"class": "A", "properties": {"d": {"_date": "yesterday"}}}}], [], "Invalid _date"),
        ([{"AddEntity": {"class": "A", "properties": {"o": {"a": 1}}}}], [], "unsupported value type object"),
        ([{"AddEntity": {"properties": {}}}], [], "'class' is required"),
        ([{"FindImage": {"operations": []}}], [], "FindImage: unsupported parameter 'operations'"),
        ([{"FindEntity": {"results": {"bogus": 1}}}], [], "results: unsupported parameter 'bogus'"),
        ([{"FindClip": {"blobs": True}}], [], "FindClip: blobs: true is not supported"),
        ([{"FindEntity": {"uniqueids": 1}}], [], "'uniqueids' must be a boolean"),
        ([{"FrobnicateEntity": {}}], [], "unsupported command 'FrobnicateEntity'"),
        ([], [], "non-empty JSON array"),
        ([{"AddEntity": {}, "FindEntity": {}}], [], "exactly one command name"),
        ([{"AddDescriptorSet": {"name": "t", "dimensions": 0}}], [], "'dimensions' must be an integer >= 1"),
        ([{"AddDescriptorSet": {"name": "t", "dimensions": 2, "metric": "COS"}}], [], "unsupported metric 'COS'"),
        ([{"AddDescriptorSet": {"name": "t", "dimensions": 2, "engine": "Annoy"}}], [], "unsupported engine 'Annoy'"),
        (
            [{"FindVideo": {"_ref": 1}}, {"AddClip": {"video_ref": 1, "frame_number_range": {"start": 0, "stop": 1}}}],
            [],
            "video_ref must reference exactly one video",
        ),
        (
            [
                {"AddEntity": {"class": "A", "_ref": 1}},
                {"AddClip": {"video_ref": 1, "frame_number_range": {"start": 0, "stop": 1}}},
            ],
            [],
            "video_ref must reference exactly one video",
        ),
        (
            [
                {"AddVideo": {"_ref": 1}},
                {"AddClip": {"video_ref": 1, "time_offset_range": {"start": "x", "stop": "1"}}},
            ],
            [b"not a video"],
            "invalid time offset 'x'",
        ),
        (
            [{"AddVideo": {"_ref": 1}}, {"AddClip": {"video_ref": 1, "frame_number_range": {"start": 5, "stop": 1}}}],
            [b"v"],
            "start is after stop",
        ),
        (
            [
                {"AddEntity": {"class": "A", "_ref": 1}},
                {"FindEntity": {"is_connected_to": {"ref": 1, "direction": "up"}}},
            ],
            [],
            "is_connected_to.direction must be 'in', 'out' or 'any', got 'up'",
        ),
        ([{"FindClip": {"group_by_source": True}}], [], "group_by_source needs is_connected_to"),
        ([{"Authenticate": {"username": "a"}}], [], "must be sent alone, over the wire protocol"),
        # remove_props is checked alike for objects and connections (a string is not a list of names)
        ([{"UpdateEntity": {"remove_props": "ab"}}], [], "remove_props must be an array of property names"),
        ([{"UpdateConnection": {"remove_props": "ab"}}], [], "remove_props must be an array of property names"),
        ([{"UpdateConnection": {"remove_props": ["_uniqueid"]}}], [], "cannot remove reserved properties"),
    ],
)
def test_refusals(db: Engine, query: list[dict[str, Any]], blobs: list[bytes], message: str) -> None:
    before = counts(db)
    assert message in err(db, query, blobs)
    assert counts(db) == before


def test_type_mismatch_never_matches(engine: Engine) -> None:
    """Decision (OPEN): a constraint matches only properties of the operand's type."""
    engine.query(
        [
            {"AddEntity": {"class": "P", "properties": {"v": "10"}}},
            {"AddEntity": {"class": "P", "properties": {"v": 10}}},
            {"AddEntity": {"class": "P", "properties": {"v": True}}},
            {"AddEntity": {"class": "P", "properties": {"w": None}}},
        ]
    )

    def count(c: dict[str, Any]) -> int:
        r, _ = engine.query([{"FindEntity": {"with_class": "P", "constraints": c, "results": {"count": True}}}])
        return int(r[0]["FindEntity"]["count"])

    assert count({"v": [">", 5]}) == 1
    assert count({"v": ["==", "10"]}) == 1
    assert count({"v": ["==", True]}) == 1
    assert count({"v": ["==", 1]}) == 0
    assert count({"v": ["==", None]}) == 1  # missing or null
    assert count({"w": ["==", None]}) == 4
    assert count({"v": ["!=", None]}) == 3
    assert count({"v": ["not in", [10, "10"]]}) == 1
    assert count({"_uniqueid": ["!=", "0.0.0"]}) == 4


def test_invalid_json_text(engine: Engine) -> None:
    r, _ = engine.query("[{")
    assert r["status"] == -1 and "Invalid JSON" in r["info"]


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (float("nan"), "not a finite number"),
        (float("inf"), "not a finite number"),
        (1 << 63, "outside the 64-bit range"),
        (-(1 << 63) - 1, "outside the 64-bit range"),
    ],
)
def test_property_values_json_cannot_hold_are_refused(db: Engine, value: Any, words: str) -> None:
    info = err(db, [{"AddEntity": {"class": "E", "properties": {"ok": 1, "x": value}}}])
    assert "'x'" in info and words in info
    assert counts(db)[0] == 1  # only the set
    # the 64-bit extremes themselves are stored and read back exactly
    r, _ = db.query([{"AddEntity": {"class": "E", "properties": {"lo": -(1 << 63), "hi": (1 << 63) - 1}}}])
    assert r == [{"AddEntity": {"status": 0}}]
    r, _ = db.query([{"FindEntity": {"with_class": "E", "results": {"list": ["lo", "hi"]}}}])
    assert r[0]["FindEntity"]["entities"] == [{"lo": -(1 << 63), "hi": (1 << 63) - 1}]


def test_invalid_json_text_is_refused(db: Engine) -> None:
    r, _ = db.query('[{"AddEntity": {"class": "E", "properties": {"x": NaN}}}]')
    assert r["status"] == -1 and r["info"].startswith("Invalid JSON")
