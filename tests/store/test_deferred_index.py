"""Deferred HNSW insertion: committed vectors wait in an exactly-searched tail until the indexer (or, past
TAIL_MAX, the committing writer) inserts them into the graph. Searches, filtered searches, deletes and
reopening must not tell the difference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moments_server.store.embedded import Engine, rebuild, vectors
from moments_server.store.embedded import indexer as indexer_mod

from .helpers import brute, clustered, ingest

D, K = 32, 10


def knn(e: Any, q: np.ndarray, k: int = K, **extra: Any) -> list[dict[str, Any]]:
    body = {"set": "h", "k_neighbors": k, "distances": True, "results": {"list": ["n"]}, **extra}
    r, _ = e.query([{"FindDescriptor": body}], [q.astype(np.float32).tobytes()])
    assert isinstance(r, list), r
    return r[0]["FindDescriptor"].get("entities", [])


def make(e: Engine, metric: str) -> None:
    r, _ = e.query([{"AddDescriptorSet": {"name": "h", "dimensions": D, "metric": metric, "engine": "HNSW"}}])
    assert r == [{"AddDescriptorSet": {"status": 0}}]


@pytest.fixture
def paused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The indexer never finds the store idle: what is committed stays in the tail until drained here."""
    monkeypatch.setattr(indexer_mod, "INDEX_IDLE_S", 3600.0)


@pytest.mark.parametrize("metric", ["L2", "IP", "CS"])
def test_tail_and_graph_answer_exactly_together(tmp_path: Path, paused: None, metric: str) -> None:
    xb = clustered(4000, D, clusters=20, seed=11)
    queries = clustered(20, D, clusters=20, seed=12)
    with Engine(tmp_path / "db") as e:
        make(e, metric)
        ingest(e, "h", xb)
        vi = e.sets.by_name["h"].index
        assert vi.pending == 4000 and vi.index.ntotal == 0 and vi.ntotal == 4000
        for q in queries[:5]:  # all in the tail: an exact scan
            idx, dist = brute(xb, q, K, metric)
            got = knn(e, q)
            assert [g["n"] for g in got] == idx.tolist()
            np.testing.assert_allclose([g["_distance"] for g in got], dist, rtol=1e-4, atol=1e-4)
        vi.drain(2500)  # half graph, half tail: the answers are merged
        assert vi.pending == 1500 and vi.index.ntotal == 2500
        hits = 0
        for q in queries:
            idx, dist = brute(xb, q, K, metric)
            got = knn(e, q)
            d = [g["_distance"] for g in got]
            assert d == sorted(d, reverse=metric != "L2")
            hits += len(set(idx.tolist()) & {g["n"] for g in got})
        assert hits / (K * len(queries)) >= 0.98
        # a filtered search over candidates on both sides stays exact
        sub = np.flatnonzero(np.arange(4000) % 10 == 3)
        for q in queries[:5]:
            i2, d2 = brute(xb[sub], q, K, metric)
            got = knn(e, q, constraints={"video_id": ["==", "v3"]})
            assert [g["n"] for g in got] == sub[i2].tolist()
            np.testing.assert_allclose([g["_distance"] for g in got], d2, rtol=1e-4, atol=1e-4)


def test_unselective_filter_over_graph_and_tail(tmp_path: Path, paused: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from moments_server.store.embedded import knn as knn_mod

    monkeypatch.setattr(knn_mod, "EXACT_MAX", 100)  # force the index's subset search
    xb = clustered(3000, D, clusters=20, seed=13)
    with Engine(tmp_path / "db") as e:
        make(e, "L2")
        ingest(e, "h", xb, videos=2)
        e.sets.by_name["h"].index.drain(1000)
        sub = np.flatnonzero(np.arange(3000) % 2 == 1)
        hits = 0
        for q in clustered(10, D, clusters=20, seed=14):
            i2, _ = brute(xb[sub], q, K, "L2")
            got = [g["n"] for g in knn(e, q, constraints={"video_id": ["==", "v1"]})]
            assert all(n % 2 == 1 for n in got) and len(got) == K
            hits += len(set(sub[i2].tolist()) & set(got))
        assert hits >= 0.98 * 10 * K


def test_deletes_reach_the_tail_and_a_crash_loses_nothing(tmp_path: Path, paused: None) -> None:
    xb = clustered(2000, D, clusters=10, seed=15)
    e = Engine(tmp_path / "db")
    make(e, "CS")
    ingest(e, "h", xb)
    e.sets.by_name["h"].index.drain(500)
    r, _ = e.query([{"DeleteDescriptor": {"set": "h", "constraints": {"video_id": ["==", "v4"]}}}])
    assert r[0]["DeleteDescriptor"]["count"] == 200
    q = xb[1004]  # a deleted descriptor (in the tail) is not found, even by its own vector
    assert 1004 not in {g["n"] for g in knn(e, q)}
    assert e.sets.by_name["h"].index.ntotal == 1800
    e._closed = True  # abandon: the graph holds 500, SQLite 1,800 (as after kill -9)
    e.indexer.stop()
    e2 = Engine(tmp_path / "db")
    try:
        vi = e2.sets.by_name["h"].index
        live = sorted(int(i) for i in vi.ids() if int(i) not in vi.tombstones)
        rows = [r[0] for r in e2._w.execute("SELECT id FROM vectors ORDER BY id")]
        assert live == rows and vi.ntotal == 1800
        assert knn(e2, xb[7], 1)[0]["n"] == 7  # in the graph or the caught-up tail, it is found
    finally:
        e2.close()
    with Engine(tmp_path / "db") as e3:  # a clean close inserted the whole tail and saved the graph
        vi = e3.sets.by_name["h"].index
        assert vi.pending == 0 and vi.index.ntotal - len(vi.tombstones) == 1800


def test_writer_inserts_itself_past_tail_max(tmp_path: Path, paused: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "TAIL_MAX", 700)
    with Engine(tmp_path / "db") as e:
        make(e, "IP")
        ingest(e, "h", clustered(3000, D, clusters=10, seed=16), batch=500)
        vi = e.sets.by_name["h"].index
        assert vi.pending <= 700 and vi.index.ntotal + vi.pending == 3000


def test_indexer_empties_the_tail_when_writes_stop(tmp_path: Path) -> None:
    with Engine(tmp_path / "db") as e:
        make(e, "L2")
        ingest(e, "h", clustered(3000, D, clusters=10, seed=17))
        assert e.wait_indexed(timeout=60)
        vi = e.sets.by_name["h"].index
        assert vi.pending == 0 and vi.index.ntotal == 3000


def test_flat_sets_and_disabled_deferral_insert_at_commit(tmp_path: Path) -> None:
    with Engine(tmp_path / "db", deferred_index=False) as e:
        make(e, "L2")
        ingest(e, "h", clustered(500, D, clusters=5, seed=18))
        assert e.sets.by_name["h"].index.pending == 0 and e.sets.by_name["h"].index.index.ntotal == 500


def _sqlite_ids(e: Engine) -> list[int]:
    return [r[0] for r in e._w.execute("SELECT id FROM vectors ORDER BY id")]


def _live(vi: Any) -> list[int]:
    return sorted(int(i) for i in vi.ids() if int(i) not in vi.tombstones)


def test_rebuild_meanwhile_adds_and_deletes(tmp_path: Path, paused: None) -> None:
    """A rebuild driven by hand, with inserts into the old graph and deletes on both sides while it runs."""
    xb = clustered(5000, D, clusters=20, seed=21)
    with Engine(tmp_path / "db") as e:
        make(e, "CS")
        ingest(e, "h", xb[:3000])
        vi = e.sets.by_name["h"].index
        vi.drain(3000)
        assert vi.added_since_build == 3000 and vi.built == 0
        rb = rebuild.Rebuild(vi)
        assert len(rb.order) == 3000 and not rb.done
        rb.step(1000)
        ingest(e, "h", xb[3000:], start=3000)  # committed during the rebuild: into the tail ...
        vi.drain(1200)  # ... and part of it into the old graph (logged for the swap)
        r, _ = e.query([{"DeleteDescriptor": {"set": "h", "constraints": {"video_id": ["==", "v3"]}}}])
        assert r[0]["DeleteDescriptor"]["count"] == 500  # from the snapshot, the drained part and the tail
        while not rb.step(700):
            pass
        before = vi.index
        rb.finish()
        assert vi.index is not before and vi._log_adds is None
        assert _live(vi) == _sqlite_ids(e) and vi.ntotal == 4500
        assert vi.built == 3000 + 1200 - 420 and vi.added_since_build == 1200 and vi.pending == 720
        hits = 0
        keep = np.flatnonzero(np.arange(5000) % 10 != 3)
        for q in clustered(20, D, clusters=20, seed=22):
            i, _ = brute(xb[keep], q, K, "CS")
            got = [g["n"] for g in knn(e, q)]
            assert all(n % 10 != 3 for n in got)
            hits += len(set(keep[i].tolist()) & set(got))
        assert hits >= 0.97 * 20 * K


def test_indexer_rebuilds_when_due_and_the_state_persists(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "REBUILD_MIN", 1000)
    xb = clustered(3000, D, clusters=10, seed=23)
    with Engine(tmp_path / "db") as e:
        make(e, "L2")
        ingest(e, "h", xb)
        assert e.wait_indexed(timeout=120, rebuilds=True)
        vi = e.sets.by_name["h"].index
        assert vi.built == 3000 and vi.added_since_build == 0 and not vi.rebuild_due
        assert _live(vi) == _sqlite_ids(e)
    meta_path = next((tmp_path / "db" / "vectors").glob("*.json"))
    with Engine(tmp_path / "db") as e:  # the saved graph is the rebuilt one: nothing is due
        vi = e.sets.by_name["h"].index
        assert (vi.built, vi.added_since_build, vi.rebuild_due) == (3000, 0, False)
    meta = json.loads(meta_path.read_text())
    del meta["built"], meta["added_since_build"]  # an index saved before rebuilds existed
    meta_path.write_text(json.dumps(meta))
    with Engine(tmp_path / "db") as e:
        assert e.wait_indexed(timeout=120, rebuilds=True)
        assert e.sets.by_name["h"].index.built == 3000


def test_close_abandons_a_running_rebuild(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "REBUILD_MIN", 1000)
    monkeypatch.setattr(vectors, "REBUILD_CHUNK", 1)  # slow: close() finds it running
    e = Engine(tmp_path / "db")
    make(e, "IP")
    ingest(e, "h", clustered(2000, D, clusters=10, seed=24))
    assert e.wait_indexed(timeout=60)
    vi = e.sets.by_name["h"].index
    e.close()
    assert vi._log_adds is None and vi.built == 0 and vi.added_since_build == 2000
    with Engine(tmp_path / "db") as e2:
        assert e2.sets.by_name["h"].index.ntotal == 2000
