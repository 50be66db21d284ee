"""The queries Moments sends, end to end on the engine, and the behaviour around them: ingest batch,
search -> clips -> videos, group_by_source, cascades, updates, blobs, video probing, indexes."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moments_server.store.embedded import Engine

DIMS = 4


def ingest_video(
    engine: Engine,
    video_id: str,
    mp4: bytes,
    frames: list[tuple[float, list[float]]],
    thumbs: bool = True,
    meta: dict[str, Any] | None = None,
) -> Any:
    q: list[dict[str, Any]] = [
        {
            "AddVideo": {
                "_ref": 1,
                "properties": {
                    "video_id": video_id,
                    "filename": f"{video_id}.mp4",
                    "ingested_at": {"_date": "2026-11-26T06:00:00Z"},
                    **(meta or {}),
                },
            }
        }
    ]
    blobs = [mp4]
    ref = 2
    for t, v in frames:
        clip = ref
        q.append(
            {
                "AddClip": {
                    "_ref": clip,
                    "video_ref": 1,
                    "time_offset_range": {
                        "start": f"00:00:{int(t):02d}.000000",
                        "stop": f"00:00:{int(t) + 1:02d}.000000",
                    },
                    "properties": {"video_id": video_id, "start_s": t, "end_s": t + 1},
                }
            }
        )
        q.append(
            {
                "AddDescriptor": {
                    "set": "clip",
                    "connect": {"ref": clip, "class": "has_embedding"},
                    "properties": {"video_id": video_id, "frame_s": t, **(meta or {})},
                }
            }
        )
        blobs.append(struct.pack(f"<{DIMS}f", *v))
        if thumbs:
            q.append(
                {"AddImage": {"connect": {"ref": clip, "class": "thumbnail"}, "properties": {"video_id": video_id}}}
            )
            blobs.append(b"\xff\xd8jpeg" + video_id.encode())
        ref += 1
    r, _ = engine.query(q, blobs)
    assert isinstance(r, list), r
    return r


@pytest.fixture
def lib(engine: Engine, mp4: bytes) -> Engine:
    r, _ = engine.query(
        [
            {
                "AddDescriptorSet": {
                    "name": "clip",
                    "dimensions": DIMS,
                    "metric": "CS",
                    "engine": "Flat",
                    "properties": {"model": "m", "dims": DIMS},
                }
            }
        ]
    )
    assert r == [{"AddDescriptorSet": {"status": 0}}]
    ingest_video(engine, "a", mp4, [(0, [1, 0, 0, 0]), (2, [0.9, 0.1, 0, 0]), (4, [0, 1, 0, 0])], meta={"lang": "en"})
    ingest_video(engine, "b", mp4, [(0, [0, 0, 1, 0]), (3, [0.95, 0, 0.05, 0])], meta={"lang": "fr"})
    return engine


def search(engine: Engine, q: list[float], k: int = 3, constraints: dict[str, Any] | None = None) -> Any:
    fd: dict[str, Any] = {
        "set": "clip",
        "k_neighbors": k,
        "distances": True,
        "_ref": 1,
        "results": {"list": ["_uniqueid", "video_id", "frame_s"]},
    }
    if constraints:
        fd["constraints"] = constraints
    r, blobs = engine.query(
        [
            {"FindDescriptor": fd},
            {
                "FindClip": {
                    "_ref": 2,
                    "is_connected_to": {"ref": 1},
                    "group_by_source": True,
                    "results": {"list": ["video_id", "start_s", "end_s"]},
                }
            },
            {"FindVideo": {"is_connected_to": {"ref": 2}, "results": {"list": ["video_id", "lang"]}}},
            {
                "FindImage": {
                    "is_connected_to": {"ref": 2},
                    "blobs": True,
                    "group_by_source": True,
                    "results": {"list": ["video_id"]},
                }
            },
        ],
        [struct.pack(f"<{DIMS}f", *q)],
    )
    assert isinstance(r, list), r
    return r, blobs


def test_ingest_batch_and_search_chain(lib: Engine) -> None:
    r, blobs = search(lib, [1, 0, 0, 0])
    fd = r[0]["FindDescriptor"]
    assert [(e["video_id"], e["frame_s"]) for e in fd["entities"]] == [("a", 0), ("b", 3), ("a", 2)]
    d = [e["_distance"] for e in fd["entities"]]
    assert d[0] == pytest.approx(1.0) and d == sorted(d, reverse=True)
    clips = r[1]["FindClip"]
    assert clips["group_by_source"] is True and clips["returned"] == 3
    for e in fd["entities"]:  # each descriptor's own clip, keyed by its _uniqueid
        (c,) = clips["entities"][e["_uniqueid"]]
        assert c == {"end_s": e["frame_s"] + 1, "start_s": e["frame_s"], "video_id": e["video_id"]}
    assert r[2]["FindVideo"]["entities"] == [{"lang": "en", "video_id": "a"}, {"lang": "fr", "video_id": "b"}]
    imgs = r[3]["FindImage"]
    assert imgs["returned"] == 3 and imgs["blobs_start"] == 0 and len(blobs) == 3
    for group in imgs["entities"].values():
        (img,) = group
        assert blobs[img["_blob_index"]] == b"\xff\xd8jpeg" + img["video_id"].encode()


def test_filtered_search_by_video_time_and_metadata(lib: Engine) -> None:
    r, _ = search(lib, [1, 0, 0, 0], k=5, constraints={"video_id": ["in", ["a"]], "frame_s": [">=", 1, "<=", 4]})
    assert [(e["video_id"], e["frame_s"]) for e in r[0]["FindDescriptor"]["entities"]] == [("a", 2), ("a", 4)]
    r, _ = search(lib, [1, 0, 0, 0], k=5, constraints={"lang": ["==", "fr"]})
    assert [e["video_id"] for e in r[0]["FindDescriptor"]["entities"]] == ["b", "b"]
    r, _ = search(lib, [1, 0, 0, 0], constraints={"video_id": ["==", "zzz"]})
    assert r[0] == {"FindDescriptor": {"returned": 0, "status": 0}}
    assert r[1] == {"FindClip": {"returned": 0, "status": 0}}


def test_find_video_by_id_all_properties_and_blob(lib: Engine, mp4: bytes) -> None:
    r, blobs = lib.query(
        [{"FindVideo": {"constraints": {"video_id": ["==", "a"]}, "blobs": False, "results": {"all_properties": True}}}]
    )
    (v,) = r[0]["FindVideo"]["entities"]
    assert blobs == []
    assert list(v) == sorted(v)
    assert v["video_id"] == "a" and v["ingested_at"] == {"_date": "2026-11-26T06:00:00Z"}
    assert v["_frame_count"] == 60 and v["_frame_width"] == 64 and v["_frame_height"] == 48
    assert v["_fps"] == pytest.approx(30.0) and v["_duration_us"] == pytest.approx(2_000_000, rel=0.05)
    r, blobs = lib.query(
        [{"FindVideo": {"constraints": {"video_id": ["==", "b"]}, "blobs": True, "results": {"list": ["video_id"]}}}]
    )
    assert r[0]["FindVideo"] == {
        "blobs_start": 0,
        "entities": [{"_blob_index": 0, "video_id": "b"}],
        "returned": 1,
        "status": 0,
    }
    assert blobs == [mp4]
    r, _ = lib.query(
        [
            {
                "FindVideo": {
                    "constraints": {"ingested_at": [">=", {"_date": "2026-11-26T05:59:59+00:00"}]},
                    "results": {"count": True},
                }
            }
        ]
    )
    assert r[0]["FindVideo"]["count"] == 2


def test_clip_system_fields(lib: Engine) -> None:
    r, _ = lib.query(
        [
            {
                "FindClip": {
                    "constraints": {"video_id": ["==", "a"], "start_s": ["==", 2]},
                    "results": {"all_properties": True},
                }
            }
        ]
    )
    (c,) = r[0]["FindClip"]["entities"]
    assert c["_range_type"] == 3 and c["_range_start"] == 2_000_000 and c["_range_stop"] == 3_000_000
    assert c["_time_offset_range"] == {"start": "00:00:02.000000", "stop": "00:00:03.000000"}
    r, _ = lib.query(
        [
            {"FindVideo": {"_ref": 1, "constraints": {"video_id": ["==", "a"]}}},
            {
                "FindClip": {
                    "video_ref": 1,
                    "sort": {"key": "start_s", "order": "descending"},
                    "limit": 2,
                    "results": {"list": ["start_s"]},
                }
            },
        ]
    )
    assert r[1]["FindClip"]["entities"] == [{"start_s": 4}, {"start_s": 2}]


def test_update_video(lib: Engine) -> None:
    r, _ = lib.query(
        [
            {
                "UpdateVideo": {
                    "constraints": {"video_id": ["==", "a"]},
                    "properties": {"status": "ready"},
                    "remove_props": ["lang"],
                }
            }
        ]
    )
    assert r == [{"UpdateVideo": {"count": 1, "status": 0}}]
    r, _ = lib.query(
        [{"FindVideo": {"constraints": {"video_id": ["==", "a"]}, "results": {"list": ["status", "lang", "video_id"]}}}]
    )
    assert r[0]["FindVideo"]["entities"] == [{"status": "ready", "video_id": "a"}]


def test_delete_video_cascades_to_clips_only(lib: Engine) -> None:
    """Decision: DeleteVideo deletes the video's clips (and every connection of both); descriptors and
    images are deleted by their own commands (Moments deletes them in the same transaction)."""
    r, _ = lib.query([{"DeleteVideo": {"constraints": {"video_id": ["==", "a"]}}}])
    assert r == [{"DeleteVideo": {"count": 1, "status": 0}}]
    r, _ = lib.query(
        [
            {"FindClip": {"constraints": {"video_id": ["==", "a"]}, "results": {"count": True}}},
            {"FindDescriptor": {"set": "clip", "constraints": {"video_id": ["==", "a"]}, "results": {"count": True}}},
            {"FindConnection": {"with_class": "has_embedding", "results": {"count": True}}},
        ]
    )
    assert r[0]["FindClip"]["count"] == 0
    assert r[1]["FindDescriptor"]["count"] == 3
    assert r[2]["FindConnection"]["count"] == 2  # only b's edges are left
    r, _ = lib.query(
        [
            {"DeleteDescriptor": {"set": "clip", "constraints": {"video_id": ["==", "a"]}}},
            {"DeleteImage": {"constraints": {"video_id": ["==", "a"]}}},
            {"DeleteClip": {"constraints": {"video_id": ["==", "a"]}}},
        ]
    )
    assert r == [
        {"DeleteDescriptor": {"count": 3, "status": 0}},
        {"DeleteImage": {"count": 3, "status": 0}},
        {"DeleteClip": {"count": 0, "status": 0}},
    ]
    r, _ = search(lib, [1, 0, 0, 0], k=10)
    assert {e["video_id"] for e in r[0]["FindDescriptor"]["entities"]} == {"b"}


def test_delete_descriptor_set_cascades(lib: Engine) -> None:
    r, _ = lib.query([{"DeleteDescriptorSet": {"with_name": "clip"}}])
    assert r == [{"DeleteDescriptorSet": {"count": 1, "status": 0}}]
    r, _ = lib.query([{"FindDescriptor": {"constraints": {"video_id": ["==", "a"]}, "results": {"count": True}}}])
    assert r[0]["FindDescriptor"]["count"] == 0
    r, _ = lib.query([{"FindDescriptor": {"set": "clip", "k_neighbors": 1}}], [b"\0" * 16])
    assert r["status"] == -1 and "'clip' does not exist" in r["info"]


def test_find_descriptor_set_and_model_identity(lib: Engine) -> None:
    r, _ = lib.query(
        [
            {
                "FindDescriptorSet": {
                    "with_name": "clip",
                    "counts": True,
                    "dimensions": True,
                    "metrics": True,
                    "engines": True,
                    "results": {"all_properties": True},
                }
            }
        ]
    )
    (s,) = r[0]["FindDescriptorSet"]["entities"]
    assert s["_count"] == 5 and s["_dimensions"] == DIMS and s["_metrics"] == ["CS"]
    assert s["_engines"] == ["Flat"] and s["model"] == "m" and s["_name"] == "clip"
    r, _ = lib.query(
        [
            {"FindDescriptorSet": {"_ref": 1, "with_name": "clip"}},
            {
                "FindDescriptor": {
                    "set": "clip",
                    "is_connected_to": {"ref": 1, "connection_class": "_DescriptorSetToDescriptor"},
                    "results": {"count": True},
                }
            },
        ]
    )
    assert r[1]["FindDescriptor"]["count"] == 5


def test_if_not_found_and_unique(engine: Engine) -> None:
    q = [
        {"AddEntity": {"class": "Tag", "_ref": 1, "properties": {"name": "x"}, "if_not_found": {"name": ["==", "x"]}}},
        {"FindEntity": {"with_class": "Tag", "is_connected_to": {"ref": 1}, "results": {"count": True}}},
    ]
    r1, _ = engine.query(q)
    r2, _ = engine.query(q)
    assert r1[0] == {"AddEntity": {"status": 0}}
    assert r2[0] == {"AddEntity": {"info": "Object Exists!", "status": 2}}
    r, _ = engine.query([{"FindEntity": {"with_class": "Tag", "results": {"count": True}}}])
    assert r[0]["FindEntity"]["count"] == 1


def test_large_blob_goes_to_a_file_and_is_removed_with_its_object(tmp_path: Path) -> None:
    e = Engine(tmp_path / "db")
    big = np.random.default_rng(0).bytes(600_000)
    r, _ = e.query([{"AddBlob": {"properties": {"k": 1}}}], [big])
    assert r == [{"AddBlob": {"status": 0}}]
    assert len(e.blob_files.all_names()) == 1
    r, blobs = e.query([{"FindBlob": {"constraints": {"k": ["==", 1]}, "blobs": True}}])
    assert blobs == [big] and r[0]["FindBlob"]["entities"] == [{"_blob_index": 0}]
    r, _ = e.query([{"DeleteBlob": {"constraints": {"k": ["==", 1]}}}])
    assert r == [{"DeleteBlob": {"count": 1, "status": 0}}]
    assert e.blob_files.all_names() == set()
    e.close()


def test_create_index_is_used(engine: Engine) -> None:
    r, _ = engine.query([{"CreateIndex": {"target": "entity", "class": "P", "property": "age"}}])
    assert r == [{"CreateIndex": {"status": 0}}]
    r, _ = engine.query([{"CreateIndex": {"target": "entity", "class": "P", "property": "age"}}])
    assert r[0]["CreateIndex"]["status"] == 2
    plan = engine._w.execute(
        "EXPLAIN QUERY PLAN SELECT o.id FROM objects o WHERE o.cls='P' AND json_extract(o.props, '$.\"age\"') = 3"
    ).fetchall()
    assert any("USING INDEX ix_objects" in str(row) for row in plan), plan
    r, _ = engine.query([{"GetIndexes": {}}])
    assert r[0]["GetIndexes"]["indexes"] == [{"class": "P", "kind": "ordered", "property": "age", "target": "entity"}]
    r, _ = engine.query([{"RemoveIndex": {"target": "entity", "class": "P", "property": "age"}}])
    assert r == [{"RemoveIndex": {"status": 0}}]


def test_get_schema(lib: Engine) -> None:
    r, _ = lib.query([{"GetSchema": {}}])
    s = r[0]["GetSchema"]
    assert s["status"] == 0
    assert s["entities"]["classes"]["_Video"]["matched"] == 2
    assert s["entities"]["classes"]["_Clip"]["properties"]["start_s"][0] == 5
    assert s["connections"]["classes"]["has_embedding"]["matched"] == 5
    assert s["connections"]["classes"]["has_embedding"]["src"] == "_Descriptor"


def test_readers_do_not_wait_for_a_long_write(lib: Engine) -> None:
    """A search runs while another thread holds the writer in the middle of a transaction."""
    import threading
    import time

    lib._wlock.acquire()
    lib._w.execute("BEGIN IMMEDIATE")
    lib._w.execute("INSERT INTO objects VALUES (999999, 'X', '{}', NULL, NULL)")
    try:
        out: list[Any] = []
        t = threading.Thread(target=lambda: out.append(search(lib, [1, 0, 0, 0])))
        t0 = time.monotonic()
        t.start()
        t.join(5)
        assert out and time.monotonic() - t0 < 2
        assert out[0][0][0]["FindDescriptor"]["returned"] == 3
        r, _ = lib.query([{"FindEntity": {"with_class": "X", "results": {"count": True}}}])
        assert r[0]["FindEntity"]["count"] == 0  # the uncommitted row is invisible
    finally:
        lib._w.execute("ROLLBACK")
        lib._wlock.release()


def test_add_then_delete_in_one_query_and_replace(lib: Engine, mp4: bytes) -> None:
    r, _ = lib.query(
        [
            {"AddDescriptor": {"set": "clip", "properties": {"video_id": "tmp"}}},
            {"DeleteDescriptor": {"set": "clip", "constraints": {"video_id": ["==", "tmp"]}}},
        ],
        [struct.pack(f"<{DIMS}f", 0, 0, 0, 1)],
    )
    assert r[1] == {"DeleteDescriptor": {"count": 1, "status": 0}}
    r, _ = search(lib, [0, 0, 0, 1], k=10)
    assert "tmp" not in {e["video_id"] for e in r[0]["FindDescriptor"]["entities"]}
    assert lib.sets.by_name["clip"].index.ntotal == 5
    # replace a video: delete everything of it and ingest again, in one transaction each
    lib.query(
        [
            {"DeleteDescriptor": {"set": "clip", "constraints": {"video_id": ["==", "b"]}}},
            {"DeleteImage": {"constraints": {"video_id": ["==", "b"]}}},
            {"DeleteVideo": {"constraints": {"video_id": ["==", "b"]}}},
        ]
    )
    ingest_video(lib, "b", mp4, [(7, [0, 0, 0, 1])])
    r, _ = search(lib, [0, 0, 0, 1], k=1)
    assert [(e["video_id"], e["frame_s"]) for e in r[0]["FindDescriptor"]["entities"]] == [("b", 7)]


def test_sort_dates_by_instant_and_page(engine: Engine) -> None:
    for i, d in enumerate(["2026-01-02T00:00:00+05:00", "2026-01-01T22:00:00Z", "2026-01-01T20:00:00-03:00"]):
        engine.query([{"AddEntity": {"class": "V", "properties": {"i": i, "at": {"_date": d}}}}])
    r, _ = engine.query(
        [
            {
                "FindEntity": {
                    "with_class": "V",
                    "sort": {"key": "at", "order": "ascending"},
                    "results": {"list": ["i"]},
                }
            },
            {"FindEntity": {"with_class": "V", "sort": "at", "limit": 1, "offset": 1, "results": {"list": ["i"]}}},
        ]
    )
    # instants: i=0 -> 2026-01-01T19:00Z, i=1 -> 22:00Z, i=2 -> 23:00Z
    assert r[0]["FindEntity"]["entities"] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert r[1]["FindEntity"]["entities"] == [{"i": 1}]


def test_sdk_expression_constraints(engine: Engine) -> None:
    engine.query(
        [
            {
                "AddEntity": {
                    "class": "P",
                    "properties": {"n": "$x", "age": a, "d": {"_date": f"202{a}-01-01T00:00:00Z"}},
                }
            }
            for a in range(5)
        ]
    )

    def names(c: Any) -> list[int]:
        r, _ = engine.query([{"FindEntity": {"with_class": "P", "constraints": c, "results": {"list": ["age"]}}}])
        return [e["age"] for e in r[0]["FindEntity"].get("entities", [])]

    assert names(["all", ["$age", ">=", 1], ["$age", "<", 3]]) == [1, 2]
    assert names(["any", ["$age", "==", 0], ["$age", "in", {"array": [3, 4]}]]) == [0, 3, 4]
    assert names(["$n", "==", "$$x"]) == [0, 1, 2, 3, 4]
    assert names(["$d", ">=", {"to_date": "2023-01-01T00:00:00Z"}]) == [3, 4]


def test_indexes_are_not_duplicated_across_reopens(tmp_path: Path) -> None:
    for _ in range(3):
        e = Engine(tmp_path / "db")
        e.query([{"CreateIndex": {"target": "entity", "class": "P", "property": "age"}}])
        names = [r[0] for r in e._w.execute("SELECT name FROM sqlite_master WHERE type='index' AND name LIKE 'ix_%'")]
        e.close()
    assert len(names) == 2, names  # video_id (built in) and age
