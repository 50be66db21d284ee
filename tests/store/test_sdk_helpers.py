"""The aperturedb SDK's own helpers against the wire listener: Utils, ParallelLoader, ConnectionPool."""

from __future__ import annotations

import struct
import threading
from typing import Any

import numpy as np

from moments_server.store.embedded import Engine

from .conftest import sdk_connector


def test_utils(engine: Engine, wire: Any) -> None:
    from aperturedb.Utils import Utils

    srv = wire(engine, ssl=True)
    c = sdk_connector(srv.port, ssl=True)
    u = Utils(c)
    assert u.get_schema()["entities"] is None
    assert u.add_descriptorset("faces", 4, metric=["CS"], engine="Flat")
    assert u.get_descriptorset_list() == ["faces"]
    assert u.count_descriptorsets() == 1
    q = [{"AddEntity": {"class": "Person", "_ref": 1, "properties": {"name": f"p{i}", "age": i}}} for i in range(5)]
    c.query([q[0]])
    for i in range(1, 5):
        c.query([{"AddEntity": {"class": "Person", "properties": {"name": f"p{i}", "age": i}}}])
    for i in range(3):
        c.query([{"AddDescriptor": {"set": "faces", "properties": {"i": i}}}], [struct.pack("<4f", i, 1, 0, 0)])
    assert u.count_entities("Person") == 5
    assert u.count_descriptors_in_set("faces") == 3
    assert u.create_entity_index("Person", "name")
    assert u.get_indexed_props("Person") == ["name"]
    schema = u.get_schema()
    assert schema["entities"]["classes"]["Person"]["matched"] == 5
    assert schema["entities"]["classes"]["Person"]["properties"]["name"] == [5, True, "String"]
    u.summary()
    assert u.remove_all_objects()
    assert u.get_schema()["entities"] is None
    assert u.count_entities("Person") == 0
    c.close()


def test_parallel_loader_sets_and_descriptors(engine: Engine, wire: Any) -> None:
    from aperturedb.ParallelLoader import ParallelLoader
    from aperturedb.Utils import Utils

    srv = wire(engine)
    c = sdk_connector(srv.port)
    sets = [
        ([{"AddDescriptorSet": {"name": f"set{i}", "dimensions": 8, "metric": "L2", "engine": "Flat"}}], [])
        for i in range(3)
    ]
    loader = ParallelLoader(c)
    loader.ingest(sets, batchsize=2, numthreads=2)
    assert loader.error_counter == 0
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(600, 8)).astype("<f4")
    descs = [
        ([{"AddDescriptor": {"set": f"set{i % 3}", "properties": {"n": i}}}], [vecs[i].tobytes()]) for i in range(600)
    ]
    loader = ParallelLoader(c)
    loader.ingest(descs, batchsize=50, numthreads=4)
    assert loader.error_counter == 0
    u = Utils(c)
    assert sorted(u.get_descriptorset_list()) == ["set0", "set1", "set2"]
    assert [u.count_descriptors_in_set(f"set{i}") for i in range(3)] == [200, 200, 200]
    r, _ = c.query(
        [{"FindDescriptor": {"set": "set1", "k_neighbors": 1, "distances": True, "results": {"list": ["n"]}}}],
        [vecs[301].tobytes()],
    )
    assert r[0]["FindDescriptor"]["entities"] == [{"_distance": 0.0, "n": 301}]
    c.close()


def test_connection_pool_concurrency(engine: Engine, wire: Any) -> None:
    from aperturedb.ConnectionPool import ConnectionPool

    srv = wire(engine, ssl=True)
    pool = ConnectionPool(pool_size=6, connection_factory=lambda: sdk_connector(srv.port, ssl=True))
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            for j in range(10):
                with pool.get_connection(timeout=30) as conn:
                    r, _ = conn.query(
                        [
                            {"AddEntity": {"class": "W", "properties": {"i": i, "j": j}}},
                            {
                                "FindEntity": {
                                    "with_class": "W",
                                    "constraints": {"i": ["==", i]},
                                    "results": {"count": True},
                                }
                            },
                        ]
                    )
                    assert r[1]["FindEntity"]["count"] == j + 1, r
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert pool.available() == 6
    with pool.get_connection() as conn:
        r, _ = conn.query([{"FindEntity": {"with_class": "W", "results": {"count": True}}}])
    assert r[0]["FindEntity"]["count"] == 160
