"""Deferred HNSW insertion: committed vectors wait in an exactly-searched tail until the indexer (or, past
TAIL_MAX, the committing writer) inserts them into the graph. Searches, filtered searches, deletes and
reopening must not tell the difference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moments_server.store.embedded import Engine, vectors
from moments_server.store.embedded import engine as engine_mod

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
    monkeypatch.setattr(engine_mod, "INDEX_IDLE_S", 3600.0)


@pytest.mark.parametrize("metric", ["L2", "IP", "CS"])
def test_tail_and_graph_answer_exactly_together(tmp_path: Path, paused: None, metric: str) -> None:
    xb = clustered(4000, D, clusters=20, seed=11)
    queries = clustered(20, D, clusters=20, seed=12)
    with Engine(tmp_path / "db") as e:
        make(e, metric)
        ingest(e, "h", xb)
        vi = e._sets["h"].index
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
    from moments_server.store.embedded import cmd_descriptors

    monkeypatch.setattr(cmd_descriptors, "EXACT_MAX", 100)  # force the index's subset search
    xb = clustered(3000, D, clusters=20, seed=13)
    with Engine(tmp_path / "db") as e:
        make(e, "L2")
        ingest(e, "h", xb, videos=2)
        e._sets["h"].index.drain(1000)
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
    e._sets["h"].index.drain(500)
    r, _ = e.query([{"DeleteDescriptor": {"set": "h", "constraints": {"video_id": ["==", "v4"]}}}])
    assert r[0]["DeleteDescriptor"]["count"] == 200
    q = xb[1004]  # a deleted descriptor (in the tail) is not found, even by its own vector
    assert 1004 not in {g["n"] for g in knn(e, q)}
    assert e._sets["h"].index.ntotal == 1800
    e._closed = True  # abandon: the graph holds 500, SQLite 1,800 (as after kill -9)
    e._stop_indexer()
    e2 = Engine(tmp_path / "db")
    try:
        vi = e2._sets["h"].index
        live = sorted(int(i) for i in vi.ids() if int(i) not in vi.tombstones)
        rows = [r[0] for r in e2._w.execute("SELECT id FROM vectors ORDER BY id")]
        assert live == rows and vi.ntotal == 1800
        assert knn(e2, xb[7], 1)[0]["n"] == 7  # in the graph or the caught-up tail, it is found
    finally:
        e2.close()
    with Engine(tmp_path / "db") as e3:  # a clean close inserted the whole tail and saved the graph
        vi = e3._sets["h"].index
        assert vi.pending == 0 and vi.index.ntotal - len(vi.tombstones) == 1800


def test_writer_inserts_itself_past_tail_max(tmp_path: Path, paused: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "TAIL_MAX", 700)
    with Engine(tmp_path / "db") as e:
        make(e, "IP")
        ingest(e, "h", clustered(3000, D, clusters=10, seed=16), batch=500)
        vi = e._sets["h"].index
        assert vi.pending <= 700 and vi.index.ntotal + vi.pending == 3000


def test_indexer_empties_the_tail_when_writes_stop(tmp_path: Path) -> None:
    with Engine(tmp_path / "db") as e:
        make(e, "L2")
        ingest(e, "h", clustered(3000, D, clusters=10, seed=17))
        assert e.wait_indexed(timeout=60)
        vi = e._sets["h"].index
        assert vi.pending == 0 and vi.index.ntotal == 3000


def test_flat_sets_and_disabled_deferral_insert_at_commit(tmp_path: Path) -> None:
    with Engine(tmp_path / "db", deferred_index=False) as e:
        make(e, "L2")
        ingest(e, "h", clustered(500, D, clusters=5, seed=18))
        assert e._sets["h"].index.pending == 0 and e._sets["h"].index.index.ntotal == 500
