"""FindClip's in_frame_number_range / in_time_offset_range / in_time_fraction_range: a clip is returned when
its range lies fully inside, whatever unit it was added in (converted with its video's probed fps and
duration: the test video is 60 frames at 30 fps, 2 s)."""

from __future__ import annotations

from typing import Any

import pytest

from moments_server.store.embedded import Engine

CLIPS = {
    "A": {"frame_number_range": {"start": 0, "stop": 29}},  # 0-1 s
    "B": {"frame_number_range": {"start": 30, "stop": 59}},  # 1-2 s
    "C": {"time_offset_range": {"start": "00:00:00.500000", "stop": "00:00:01.000000"}},  # frames 15-29
    "D": {"time_fraction_range": {"start": 0.75, "stop": 1.0}},  # 1.5-2 s, frames 45-59
}


@pytest.fixture
def clips(engine: Engine, mp4: bytes) -> Engine:
    q: list[dict[str, Any]] = [{"AddVideo": {"_ref": 1, "properties": {"name": "v"}}}]
    for name, rng in CLIPS.items():
        q.append({"AddClip": {"video_ref": 1, "properties": {"name": name, "odd": name in "AC"}, **rng}})
    r, _ = engine.query(q, [mp4])
    assert isinstance(r, list) and all(next(iter(x.values()))["status"] == 0 for x in r), r
    return engine


def names(engine: Engine, **body: Any) -> list[str]:
    r, _ = engine.query([{"FindClip": {**body, "results": {"list": ["name"], "sort": "name"}}}])
    assert isinstance(r, list), r
    return [e["name"] for e in r[0]["FindClip"].get("entities", [])]


@pytest.mark.parametrize(
    ("key", "rng", "want"),
    [
        ("in_frame_number_range", {"start": 0, "stop": 29}, ["A", "C"]),
        ("in_frame_number_range", {"start": 15, "stop": 29}, ["C"]),
        ("in_frame_number_range", {"start": 0, "stop": 59}, ["A", "B", "C", "D"]),
        ("in_frame_number_range", {"start": 44, "stop": 59}, ["D"]),
        ("in_frame_number_range", {"start": 46, "stop": 59}, []),
        ("in_time_offset_range", {"start": "00:00:01.000000", "stop": "00:00:02.000000"}, ["B", "D"]),
        ("in_time_offset_range", {"start": "00:00:00.000000", "stop": "00:00:00.999999"}, []),
        ("in_time_offset_range", {"start": "00:00:00.400000", "stop": "00:00:01.000000"}, ["C"]),
        ("in_time_fraction_range", {"start": 0, "stop": 0.5}, ["A", "C"]),
        ("in_time_fraction_range", {"start": 0.5, "stop": 1}, ["B", "D"]),
    ],
)
def test_in_range_across_units(clips: Engine, key: str, rng: dict[str, Any], want: list[str]) -> None:
    assert names(clips, **{key: rng}) == want


def test_in_range_with_constraints_and_video_ref(clips: Engine) -> None:
    assert names(clips, in_time_fraction_range={"start": 0, "stop": 0.5}, constraints={"odd": ["==", False]}) == []
    r, _ = clips.query(
        [
            {"FindVideo": {"_ref": 1, "constraints": {"name": ["==", "v"]}}},
            {
                "FindClip": {
                    "video_ref": 1,
                    "in_frame_number_range": {"start": 30, "stop": 59},
                    "results": {"list": ["name"], "sort": "name", "count": True},
                }
            },
        ]
    )
    assert r[1]["FindClip"]["count"] == 2 and [e["name"] for e in r[1]["FindClip"]["entities"]] == ["B", "D"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            {
                "in_frame_number_range": {"start": 0, "stop": 1},
                "in_time_fraction_range": {"start": 0, "stop": 1},
            },
            "at most one of",
        ),
        ({"in_frame_number_range": {"start": 0}}, "needs both 'start' and 'stop'"),
        ({"in_frame_number_range": {"start": -1, "stop": 3}}, "non-negative integers"),
        ({"in_time_fraction_range": {"start": 0, "stop": 1.5}}, "numbers in [0, 1]"),
        ({"in_time_offset_range": {"start": "00:00:02", "stop": "00:00:01"}}, "start is after stop"),
        ({"in_frame_number_range": {"start": 0, "stop": 1, "step": 2}}, "unknown key 'step'"),
    ],
)
def test_in_range_errors(clips: Engine, body: dict[str, Any], words: str) -> None:
    r, _ = clips.query([{"FindClip": body}])
    assert r["status"] == -1 and words in r["info"] and "FindClip" in r["info"], r
    assert "FindClip" in r["FailedCommand"]
