"""The read cache (readcache.py) never changes an answer: reads through it equal reads of an engine without it,
after every kind of write, and a reader never sees through it a row newer or older than its snapshot."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from moments_server.store.embedded import Engine
from moments_server.store.embedded.readcache import CachedRow, ReadCache

DIMS = 8
SET = "frames"


def vec(rng: random.Random) -> bytes:
    v = np.array([rng.random() for _ in range(DIMS)], dtype="<f4")
    return (v / np.linalg.norm(v)).astype("<f4").tobytes()


def search(e: Engine, q: bytes, k: int = 6, **find: Any) -> Any:
    """Moments' query shape: kNN, then each hit's clip through its edge, grouped by hit."""
    response, _ = e.query(
        [
            {
                "FindDescriptor": {
                    "set": SET,
                    "k_neighbors": k,
                    "distances": True,
                    "_ref": 1,
                    "results": {"all_properties": True},
                    **find,
                }
            },
            {
                "FindClip": {
                    "is_connected_to": {"ref": 1, "connection_class": "frame"},
                    "_ref": 2,
                    "results": {"list": ["_uniqueid", "start_s", "video_id"], "group_by_source": True},
                }
            },
            {"FindEntity": {"is_connected_to": {"ref": 2}, "results": {"all_properties": True}}},
        ],
        [q],
    )
    return response


def add_video(e: Engine, rng: random.Random, vid: str, frames: int, mp4: bytes) -> None:
    cmds: list[dict[str, Any]] = [{"AddVideo": {"_ref": 1, "properties": {"video_id": vid}}}]
    blobs = [mp4]
    for i in range(frames):
        ref = 2 + i
        cmds.append(
            {
                "AddClip": {
                    "_ref": ref,
                    "video_ref": 1,
                    "frame_number_range": {"start": i, "stop": i + 1},
                    "properties": {"video_id": vid, "start_s": i},
                }
            }
        )
        cmds.append(
            {
                "AddDescriptor": {
                    "set": SET,
                    "properties": {"video_id": vid, "frame": i, "tag": rng.choice("abc")},
                    "connect": {"ref": ref, "class": "frame"},
                }
            }
        )
        blobs.append(vec(rng))
    response, _ = e.query(cmds, blobs)
    assert isinstance(response, list), response


def random_write(rng: random.Random, step: int, videos: list[str]) -> tuple[str, list[dict[str, Any]]]:
    vid = rng.choice(videos)
    by_video = {"video_id": ["==", vid]}
    kind = rng.choice(["update_desc", "update_clip", "delete_clip", "delete_desc", "connect", "disconnect", "add"])
    if kind == "update_desc":
        return kind, [{"UpdateDescriptor": {"constraints": by_video, "properties": {"tag": f"t{step}"}}}]
    if kind == "update_clip":
        return kind, [{"UpdateClip": {"constraints": by_video, "properties": {"start_s": step}}}]
    if kind == "delete_clip":
        return kind, [{"DeleteClip": {"constraints": {"start_s": ["==", rng.randrange(4)]}}}]
    if kind == "delete_desc":
        frame = {"frame": ["==", rng.randrange(4)], **by_video}
        return kind, [{"DeleteDescriptor": {"set": SET, "constraints": frame}}]
    if kind == "connect":  # another clip edge for existing descriptors
        return kind, [
            {"FindClip": {"_ref": 1, "constraints": by_video, "limit": 1}},
            {"FindDescriptor": {"set": SET, "_ref": 2, "constraints": {"video_id": ["==", rng.choice(videos)]}}},
            {"AddConnection": {"class": "frame", "src": 2, "dst": 1}},
        ]
    if kind == "disconnect":
        return kind, [
            {"FindClip": {"_ref": 1, "constraints": by_video}},
            {"DeleteConnection": {"with_class": "frame", "dst": 1}},
        ]
    return kind, [{"AddEntity": {"class": "Note", "properties": {"video_id": f"{vid}-x{step}"}}}]


def test_reads_through_the_cache_equal_reads_without_it(tmp_path: Path, mp4: bytes) -> None:
    cached, plain = Engine(tmp_path / "cached"), Engine(tmp_path / "plain", read_cache_rows=0)
    rng = random.Random(7)
    videos = [f"v{i}" for i in range(4)]
    try:
        for e in (cached, plain):
            e.query([{"AddDescriptorSet": {"name": SET, "dimensions": DIMS, "metric": "CS"}}])
        for vid in videos:
            state = rng.getstate()
            for e in (cached, plain):
                rng.setstate(state)
                add_video(e, rng, vid, 5, mp4)
        queries = [vec(rng) for _ in range(5)]
        filters = [{}, {"constraints": {"tag": ["==", "a"]}}]
        kinds: set[str] = set()
        clips = 0
        for step in range(60):
            for q in queries:
                for f in filters:
                    found = search(cached, q, **f)
                    assert found == search(plain, q, **f), f"step {step}"
                    clips += sum(len(v) for v in found[1]["FindClip"].get("entities", {}).values())
            kind, write = random_write(rng, step, videos)
            a, b = cached.query(write), plain.query(write)
            assert a == b and isinstance(a[0], list), (kind, a)
            kinds.add(kind)
        assert len(kinds) == 7  # every kind of write ran
        assert clips > 100  # the searches did reach clips
        assert cached.cache.stats()["rows"] > 0 and cached.cache.stats()["edges"] > 0
        assert plain.cache.stats()["rows"] == 0
    finally:
        cached.close()
        plain.close()


def row(i: int, tag: str) -> CachedRow:
    return CachedRow((i, "_Descriptor", "{}", 1, None), {"tag": tag})


def test_a_reader_never_sees_through_the_cache_past_its_snapshot() -> None:
    c = ReadCache()
    old_reader = c.snapshot()
    c.put_rows({1: row(1, "old"), 2: row(2, "old")}, old_reader)
    assert set(c.rows([1, 2], old_reader)[0]) == {1, 2}
    # a writer changes row 1: gone from the cache before its commit, marked changed at the next generation
    c.invalidate({1})
    found, missing = c.rows([1, 2], old_reader)
    assert set(found) == {2} and missing == [1]
    c.put_rows({1: row(1, "old")}, old_reader)  # what the old snapshot read must not be kept
    c.committed()
    assert c.rows([1], c.snapshot())[1] == [1]
    new_reader = c.snapshot()
    c.put_rows({1: row(1, "new")}, new_reader)
    assert c.rows([1], new_reader)[0][1].props["tag"] == "new"
    # ... and the old snapshot does not see the new row either
    assert c.rows([1], old_reader)[1] == [1]
    assert 2 in c.rows([2], old_reader)[0]


def test_the_cache_is_bounded_and_can_be_off() -> None:
    c = ReadCache(capacity=100)
    snap = c.snapshot()
    c.put_rows({i: row(i, "x") for i in range(250)}, snap)
    assert c.stats()["rows"] <= 100
    off = ReadCache(capacity=0)
    off.put_rows({1: row(1, "x")}, off.snapshot())
    assert off.stats()["rows"] == 0
    many = ReadCache(dirty_max=10)
    many.put_rows({1: row(1, "x")}, many.snapshot())
    old = many.snapshot()
    many.invalidate(set(range(100, 120)))  # past the dirty bound: everything goes, old snapshots stop using it
    many.committed()
    assert many.stats() == {"rows": 0, "edges": 0, "dirty": 0}
    many.put_rows({1: row(1, "x")}, old)
    assert many.rows([1], old)[1] == [1]


def test_a_replica_in_another_engine_answers_as_its_owner(tmp_path: Path, mp4: bytes) -> None:
    """replica.py: a read-only Engine on the owner's data dir follows its writes (new vectors, the change
    log's touched objects, removed vectors, new sets) and answers every read as the owner does."""
    owner = Engine(tmp_path / "db")
    rng = random.Random(11)
    videos = [f"v{i}" for i in range(3)]
    try:
        replica = Engine(tmp_path / "db", replica=True)  # before the set exists: it must follow its creation
        try:
            owner.query([{"AddDescriptorSet": {"name": SET, "dimensions": DIMS, "metric": "CS"}}])
            for vid in videos:
                add_video(owner, rng, vid, 5, mp4)
            queries = [vec(rng) for _ in range(4)]
            refused, _ = replica.query([{"AddEntity": {"class": "Note"}}])
            assert refused["status"] == -1 and "read-only replica" in refused["info"]
            for step in range(40):
                for q in queries:
                    for f in ({}, {"constraints": {"tag": ["==", "b"]}}):
                        assert search(replica, q, **f) == search(owner, q, **f), f"step {step}"
                _, write = random_write(rng, step, videos)
                response, _ = owner.query(write)
                assert isinstance(response, list), response
                if step % 10 == 9:
                    add_video(owner, rng, f"late-{step}", 3, mp4)
            count = [{"FindDescriptor": {"set": SET, "results": {"count": True}}}]
            assert replica.query(count)[0] == owner.query(count)[0]
            assert replica.replica is not None and replica.replica.seq > 0
            # the replica's FAISS copy holds the owner's vectors, removals included
            assert replica.sets.by_name[SET].index.ntotal == owner.sets.by_name[SET].index.ntotal
        finally:
            replica.close()
        # a replica opened later starts from the same state
        late = Engine(tmp_path / "db", replica=True)
        try:
            for q in queries:
                assert search(late, q) == search(owner, q)
        finally:
            late.close()
    finally:
        owner.close()


def test_a_search_answered_from_the_cache_reads_no_sql(tmp_path: Path, mp4: bytes) -> None:
    """A reader begins its transaction on its first SQL (Tx.conn): a repeated search, whose rows and edges
    are cached and whose vectors are all in the index, runs no statement at all; after a write touches its
    rows it reads them again, inside one deferred transaction."""
    e = Engine(tmp_path / "store")
    rng = random.Random(3)
    try:
        e.query([{"AddDescriptorSet": {"name": SET, "dimensions": DIMS, "metric": "CS"}}])
        for vid in ("v0", "v1"):
            add_video(e, rng, vid, 5, mp4)
        assert e.indexer.wait(timeout=30)
        q = vec(rng)
        first = search(e, q)
        statements: list[str] = []
        e._reader().set_trace_callback(statements.append)  # this thread's reader connection
        assert search(e, q) == first
        assert statements == []
        updated, _ = e.query(
            [{"UpdateDescriptor": {"constraints": {"video_id": ["==", "v0"]}, "properties": {"tag": "z"}}}]
        )
        assert updated[0]["UpdateDescriptor"]["status"] == 0, updated
        again = search(e, q)
        assert statements[0] == "BEGIN" and statements[-1] == "COMMIT"
        assert any(s.startswith("SELECT") for s in statements)
        found = again[0]["FindDescriptor"]["entities"]
        assert {d["tag"] for d in found if d["video_id"] == "v0"} == {"z"}
    finally:
        e.close()
