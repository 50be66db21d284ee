"""kNN against numpy brute force on clustered data: exact for Flat and for filtered queries (all three
metrics), HNSW recall@10 >= 0.95 at the default parameters on 100k clustered 32-d vectors (make bench
measures 512-d CLIP-like frames), batched query vectors, deletes and reopening."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from moments_server.store.embedded import Engine
from moments_server.store.embedded import knn as knn_mod

from .helpers import brute, clustered, ingest

N, D, K = 3000, 32, 10


def knn(engine: Any, set_name: str, q: np.ndarray, k: int = K, **extra: Any) -> list[dict[str, Any]]:
    body = {"set": set_name, "k_neighbors": k, "distances": True, "results": {"list": ["n"]}, **extra}
    r, _ = engine.query([{"FindDescriptor": body}], [q.astype(np.float32).tobytes()])
    assert isinstance(r, list), r
    return r[0]["FindDescriptor"].get("entities", [])


def make_set(engine: Any, name: str, metric: str, engine_name: str = "Flat", dims: int = D) -> None:
    r, _ = engine.query(
        [{"AddDescriptorSet": {"name": name, "dimensions": dims, "metric": metric, "engine": engine_name}}]
    )
    assert r == [{"AddDescriptorSet": {"status": 0}}]


def assert_exact(ents: list[dict[str, Any]], idx: np.ndarray, dist: np.ndarray) -> None:
    assert [e["n"] for e in ents] == idx.tolist()
    np.testing.assert_allclose([e["_distance"] for e in ents], dist, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("metric", ["L2", "IP", "CS"])
def test_flat_exact_unfiltered_and_filtered(engine: Engine, metric: str) -> None:
    xb = clustered(N, D, seed=1)
    make_set(engine, "s", metric)
    ingest(engine, "s", xb)
    queries = clustered(15, D, seed=2)
    vid = np.array([i % 10 for i in range(N)])
    for q in queries:
        idx, dist = brute(xb, q, K, metric)
        assert_exact(knn(engine, "s", q), idx, dist)
        # filtered: one video, and a frame range on top: k drawn from the rows that pass
        sub = np.flatnonzero(vid == 3)
        i2, d2 = brute(xb[sub], q, K, metric)
        assert_exact(knn(engine, "s", q, constraints={"video_id": ["==", "v3"]}), sub[i2], d2)
        sub = np.flatnonzero((vid == 3) & (np.arange(N) >= 600) & (np.arange(N) <= 1800))
        i3, d3 = brute(xb[sub], q, K, metric)
        got = knn(engine, "s", q, constraints={"video_id": ["in", ["v3"]], "frame_s": [">=", 600, "<=", 1800]})
        assert_exact(got, sub[i3], d3)


@pytest.mark.parametrize(("metric", "engine_name"), [("L2", "Flat"), ("CS", "Flat"), ("IP", "HNSW")])
def test_unselective_filter_uses_index_subset_search(
    engine: Engine, metric: str, engine_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(knn_mod, "EXACT_MAX", 100)  # force the IDSelector path at test size
    xb = clustered(N, D, seed=3)
    make_set(engine, "s", metric, engine_name)
    ingest(engine, "s", xb)
    vid = np.array([i % 10 for i in range(N)])
    sub = np.flatnonzero(vid != 0)
    for q in clustered(5, D, seed=4):
        i2, d2 = brute(xb[sub], q, K, metric)
        assert_exact(knn(engine, "s", q, constraints={"video_id": ["!=", "v0"]}), sub[i2], d2)


def test_hnsw_recall_at_default_params(engine: Engine) -> None:
    n, d = 100_000, 32
    xb = clustered(n, d, clusters=50, seed=5)
    make_set(engine, "h", "CS", "HNSW", dims=d)
    ingest(engine, "h", xb, batch=2000)
    assert engine.wait_indexed(timeout=300)  # measure the graph, not the exactly-searched tail
    queries = clustered(100, d, clusters=50, seed=6)
    hits = 0
    for q in queries:
        idx, _ = brute(xb, q, K, "CS")
        got = knn(engine, "h", q)
        hits += len(set(idx.tolist()) & {e["n"] for e in got})
    recall = hits / (K * len(queries))
    assert recall >= 0.95, recall
    # filtered HNSW queries are exact (few candidates: searched from SQLite)
    sub = np.flatnonzero(np.arange(n) % 10 == 7)
    q = queries[0]
    i2, d2 = brute(xb[sub], q, K, "CS")
    assert_exact(knn(engine, "h", q, constraints={"video_id": ["==", "v7"]}), sub[i2], d2)


@pytest.mark.parametrize("engine_name", ["Flat", "HNSW"])
def test_deletes_are_reflected_at_once_and_survive_reopen(tmp_path: Path, engine_name: str) -> None:
    xb = clustered(1000, D, seed=7)
    e = Engine(tmp_path / "db")
    make_set(e, "s", "L2", engine_name)
    ingest(e, "s", xb)
    q = xb[0]
    r, _ = e.query([{"DeleteDescriptor": {"set": "s", "constraints": {"video_id": ["==", "v0"]}}}])
    assert r == [{"DeleteDescriptor": {"count": 100, "status": 0}}]
    keep = np.flatnonzero(np.arange(1000) % 10 != 0)
    i2, _d2 = brute(xb[keep], q, K, "L2")
    got = knn(e, "s", q)
    assert [x["n"] for x in got] == keep[i2].tolist()
    e.close()
    e2 = Engine(tmp_path / "db")  # clean reopen: loads the persisted index
    assert [x["n"] for x in knn(e2, "s", q)] == keep[i2].tolist()
    # a crash (no close) after more adds and deletes: the next open catches the index up from SQLite
    ingest(e2, "s", xb[:50], start=1000)
    e2.query([{"DeleteDescriptor": {"set": "s", "constraints": {"n": ["<", 500]}}}])
    e2._closed = True  # abandon without persisting the index (as kill -9 would)
    e3 = Engine(tmp_path / "db")
    alive = [n for n in range(1050) if n >= 500 and not (n < 1000 and n % 10 == 0)]
    allx = np.concatenate([xb, xb[:50]])
    i3, _ = brute(allx[alive], q, K, "L2")
    assert [x["n"] for x in knn(e3, "s", q)] == [alive[j] for j in i3]
    s = e3.sets.by_name["s"]
    ids = sorted(int(i) for i in s.index.ids() if int(i) not in s.index.tombstones)
    db_ids = [r[0] for r in e3._w.execute("SELECT id FROM vectors ORDER BY id")]
    assert ids == db_ids
    e3.close()


def test_batched_query_vectors(engine: Engine) -> None:
    xb = clustered(500, D, seed=8)
    make_set(engine, "s", "CS")
    ingest(engine, "s", xb)
    qs = clustered(3, D, seed=9)
    singles = [knn(engine, "s", q, k=5) for q in qs]
    r, _ = engine.query(
        [{"FindDescriptor": {"set": "s", "k_neighbors": 5, "distances": True, "results": {"list": ["n"]}}}],
        [qs.tobytes()],
    )
    out = r[0]["FindDescriptor"]
    assert out["returned"] == 15
    assert out["entities"] == singles


def test_knn_sort_and_count(engine: Engine) -> None:
    xb = clustered(200, D, seed=10)
    make_set(engine, "s", "L2")
    ingest(engine, "s", xb)
    got = knn(engine, "s", xb[5], k=7, sort={"key": "n", "order": "descending"})
    ns = [e["n"] for e in got]
    assert ns == sorted(ns, reverse=True) and len(ns) == 7
    r, _ = engine.query(
        [{"FindDescriptor": {"set": "s", "k_neighbors": 7, "results": {"count": True}}}], [xb[5].tobytes()]
    )
    assert r == [{"FindDescriptor": {"count": 7, "returned": 0, "status": 0}}]


def test_knn_first_and_uniqueids(engine: Engine) -> None:
    make_set(engine, "s", "L2", dims=2)
    engine.query(
        [{"AddDescriptor": {"set": "s", "properties": {"n": i, "c": "AB"[i % 2]}}} for i in range(4)],
        [np.array([i, 0], "<f4").tobytes() for i in range(4)],
    )
    q = np.array([0, 0], "<f4")
    # default: k drawn from the rows that pass; knn_first: the k nearest overall, then filtered
    assert [e["n"] for e in knn(engine, "s", q, k=2, constraints={"c": ["==", "B"]})] == [1, 3]
    assert [e["n"] for e in knn(engine, "s", q, k=2, constraints={"c": ["==", "B"]}, knn_first=True)] == [1]
    got = knn(engine, "s", q, k=1, uniqueids=True)
    assert got[0]["_uniqueid"].startswith("1.") and got[0]["n"] == 0


def test_search_sees_descriptors_added_earlier_in_the_same_query(engine: Engine) -> None:
    make_set(engine, "s", "L2", dims=2)
    engine.query(
        [{"AddDescriptor": {"set": "s", "properties": {"n": 0, "c": "A"}}}], [np.array([5, 5], "<f4").tobytes()]
    )
    q = [
        {"AddDescriptor": {"set": "s", "properties": {"n": 1, "c": "A"}}},
        {"FindDescriptor": {"set": "s", "k_neighbors": 2, "distances": True, "results": {"list": ["n"]}}},
        {
            "FindDescriptor": {
                "set": "s",
                "k_neighbors": 2,
                "constraints": {"c": ["==", "A"]},
                "results": {"list": ["n"]},
            }
        },
    ]
    r, _ = engine.query(q, [np.array([0, 0], "<f4").tobytes()] + [np.array([0, 0], "<f4").tobytes()] * 2)
    assert r[1]["FindDescriptor"]["entities"] == [{"_distance": 0.0, "n": 1}, {"_distance": 50.0, "n": 0}]
    assert r[2]["FindDescriptor"]["entities"] == [{"n": 1}, {"n": 0}]


def test_reopen_fast_path_ids_never_reused_and_lost_metadata(tmp_path: Path) -> None:
    xb = clustered(200, D, seed=11)
    e = Engine(tmp_path / "db")
    make_set(e, "s", "L2")
    ingest(e, "s", xb)
    e.close()
    e = Engine(tmp_path / "db")  # fingerprint matches: the saved index is used as is
    top = e._w.execute("SELECT max(id) FROM vectors").fetchone()[0]
    e.query([{"DeleteDescriptor": {"set": "s", "constraints": {"n": ["==", 199]}}}])
    e._closed = True  # crash: the index file still holds the deleted vector
    e = Engine(tmp_path / "db")
    assert 199 not in [x["n"] for x in knn(e, "s", xb[199], k=3)]
    ingest(e, "s", xb[:1], start=500)
    new_id = e._w.execute("SELECT max(id) FROM vectors").fetchone()[0]
    assert new_id > top  # the deleted id is not handed out again
    e.close()
    for f in (tmp_path / "db" / "vectors").glob("*.json"):
        f.unlink()  # a crash between replacing the index file and writing its metadata
    e = Engine(tmp_path / "db")
    assert [x["n"] for x in knn(e, "s", xb[0], k=1)] in ([0], [500])
    assert e.sets.by_name["s"].index.ntotal == 200
    e.close()


def test_knn_limit_and_offset_after_sort(engine: Engine) -> None:
    xb = clustered(100, D, seed=12)
    make_set(engine, "s", "L2")
    ingest(engine, "s", xb)
    full = knn(engine, "s", xb[3], k=6, sort="n")
    assert [e["n"] for e in knn(engine, "s", xb[3], k=6, sort="n", limit=2, offset=1)] == [e["n"] for e in full[1:3]]


def _recall(engine: Any, name: str, xb: np.ndarray, queries: np.ndarray) -> float:
    hits = 0
    for q in queries:
        idx, _ = brute(xb, q, K, "CS")
        hits += len(set(idx.tolist()) & {e["n"] for e in knn(engine, name, q)})
    return hits / (K * len(queries))


def test_hnsw_parameters_come_from_the_set(tmp_path: Path) -> None:
    n, d = 5_000, 32
    xb = clustered(n, d, clusters=50, seed=7)
    queries = clustered(50, d, clusters=50, seed=8)
    with Engine(tmp_path / "db") as engine:
        for name, props in (
            ("coarse", {"hnsw_m": 4, "hnsw_ef_construction": 8, "hnsw_ef_search": 10}),
            ("fine", {"hnsw_m": 32, "hnsw_ef_search": 256}),
        ):
            r, _ = engine.query(
                [
                    {
                        "AddDescriptorSet": {
                            "name": name,
                            "dimensions": d,
                            "metric": "CS",
                            "engine": "HNSW",
                            "properties": props,
                        }
                    }
                ]
            )
            assert r == [{"AddDescriptorSet": {"status": 0}}]
            ingest(engine, name, xb)
        assert engine.wait_indexed(timeout=120, rebuilds=True)  # the graphs the sets settle on
        coarse, fine = _recall(engine, "coarse", xb, queries), _recall(engine, "fine", xb, queries)
        assert fine >= 0.97 and coarse < fine - 0.05, (coarse, fine)
        bad, _ = engine.query(
            [{"AddDescriptorSet": {"name": "bad", "dimensions": d, "engine": "HNSW", "properties": {"hnsw_m": 1}}}]
        )
        assert bad["status"] == -1 and "hnsw_m" in bad["info"]
    with Engine(tmp_path / "db") as engine:  # reopened from the persisted index: same parameters
        assert not engine.sets.by_name["coarse"].index.rebuild_due
        assert _recall(engine, "coarse", xb, queries) == coarse


def test_filters_correlated_with_the_vectors_stay_exact_on_hnsw(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filter that excludes the query's own cluster (a camera, a set of videos): a filtered HNSW graph
    search stalls among the excluded neighbours; the store answers it exactly."""
    monkeypatch.setattr(knn_mod, "EXACT_MAX", 100)  # the large-candidate-set path at test size
    rng = np.random.default_rng(31)
    centres = rng.standard_normal((10, D)).astype(np.float32) * 4
    xb = (centres[np.arange(4000) % 10] + 0.3 * rng.standard_normal((4000, D))).astype(np.float32)
    make_set(engine, "s", "L2", "HNSW")
    ingest(engine, "s", xb)
    assert engine.wait_indexed(timeout=120)
    keep = np.flatnonzero(np.arange(4000) % 10 >= 2)  # videos v2..v9: not the query's cluster
    for j in range(5):
        q = centres[j % 2] + 0.3 * rng.standard_normal(D).astype(np.float32)
        i2, d2 = brute(xb[keep], q, K, "L2")
        got = knn(engine, "s", q, constraints={"video_id": ["not in", ["v0", "v1"]]})
        assert_exact(got, keep[i2], d2)


@pytest.mark.parametrize("metric", ["CS", "IP", "L2"])
@pytest.mark.parametrize("engine_name", ["Flat", "HNSW"])
def test_equal_distances_come_back_in_insertion_order(engine: Engine, metric: str, engine_name: str) -> None:
    """ApertureDB returns ties in insertion order (SEMANTICS.md §5); faiss's IP heaps reversed them."""
    engine.query([{"AddDescriptorSet": {"name": "t", "dimensions": 2, "metric": metric, "engine": engine_name}}])
    v = np.array([1, 0], "<f4").tobytes()
    for i in range(5):
        engine.query([{"AddDescriptor": {"set": "t", "properties": {"n": i}}}], [v])
    r, _ = engine.query([{"FindDescriptor": {"set": "t", "k_neighbors": 5, "results": {"list": ["n"]}}}], [v])
    assert [e["n"] for e in r[0]["FindDescriptor"]["entities"]] == [0, 1, 2, 3, 4]


def test_results_group_counts_the_hits_per_value(engine: Engine) -> None:
    """results.group → groups:[{key…, _group_count}] (SEMANTICS.md 8), on a kNN FindDescriptor too."""
    engine.query([{"AddDescriptorSet": {"name": "g", "dimensions": 2, "metric": "L2"}}])
    for i, cam in enumerate(["north", "south", "north", "north"]):
        vec = np.array([i, 0], "<f4").tobytes()
        engine.query([{"AddDescriptor": {"set": "g", "properties": {"cam": cam, "n": i}}}], [vec])
    q = np.array([0, 0], "<f4").tobytes()
    r, _ = engine.query([{"FindDescriptor": {"set": "g", "k_neighbors": 3, "results": {"group": ["cam"]}}}], [q])
    assert r[0]["FindDescriptor"]["groups"] == [
        {"_group_count": 2, "cam": "north"},
        {"_group_count": 1, "cam": "south"},
    ]
    r, _ = engine.query([{"FindDescriptor": {"set": "g", "results": {"group": ["cam", "missing"], "list": ["n"]}}}])
    body = r[0]["FindDescriptor"]
    assert body["groups"][0] == {"_group_count": 3, "cam": "north", "missing": None} and len(body["entities"]) == 4
    r, _ = engine.query([{"FindDescriptor": {"set": "g", "results": {"group": "cam"}}}])
    assert isinstance(r, dict) and r["status"] == -1 and "results.group" in r["info"], r
