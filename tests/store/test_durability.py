"""kill -9 of a writer in the middle of a stream of add-queries, 10 rounds on one store: after each,
every acknowledged query is there in full, no query is there in part, no orphan blob file is left,
and the vector index agrees with SQLite."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from moments_server.store.embedded import Engine
from tests.conftest import REPO

from .durability_writer import DESCRIPTORS, ENTITIES, blob_for, vec_for

WRITER = Path(__file__).with_name("durability_writer.py")
ROUNDS = 10


def run_round(data_dir: Path, first: int, rng: random.Random) -> list[int]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "server"), str(REPO)]))
    p = subprocess.Popen(
        [sys.executable, str(WRITER), str(data_dir), str(first)], stdout=subprocess.PIPE, text=True, env=env
    )
    acked: list[int] = []
    want = rng.randint(1, 6)
    assert p.stdout is not None
    try:
        while len(acked) < want:
            line = p.stdout.readline()
            assert line and not line.startswith("ERROR"), line
            acked.append(int(line))
        time.sleep(rng.uniform(0, 0.05))  # land the kill anywhere in the next transaction
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
    # acknowledgements printed before the kill but not yet read
    acked += [int(x) for x in p.stdout.read().split()]
    return acked


def verify(data_dir: Path, acked: set[int]) -> int:
    e = Engine(data_dir)
    try:
        c = e._w
        rows = dict(
            c.execute(
                "SELECT json_extract(props,'$.batch'), count(*) FROM objects WHERE cls='Row' GROUP BY 1"
            ).fetchall()
        )
        descs = dict(
            c.execute(
                "SELECT json_extract(props,'$.batch'), count(*) FROM objects WHERE cls='_Descriptor' GROUP BY 1"
            ).fetchall()
        )
        blobs = dict(
            c.execute(
                "SELECT json_extract(o.props,'$.batch'), b.file FROM objects o JOIN blobdata b "
                "ON b.id=o.id WHERE o.cls='_Blob'"
            ).fetchall()
        )
        edges = dict(
            c.execute(
                "SELECT json_extract(o.props,'$.batch'), count(*) FROM conns k JOIN objects o "
                "ON o.id=k.dst WHERE k.cls='in_batch' GROUP BY 1"
            ).fetchall()
        )
        present = set(rows) | set(descs) | set(blobs)
        assert acked <= present, f"acknowledged but lost: {sorted(acked - present)}"
        for b in present:  # all or nothing
            assert rows.get(b) == ENTITIES and descs.get(b) == DESCRIPTORS and b in blobs, b
            assert edges.get(b) == ENTITIES, b
            assert e.blob_files.read(blobs[b]) == blob_for(b)
        assert e.blob_files.all_names() == set(blobs.values()), "orphan blob files"
        s = e.sets.by_name["d"]
        idx_ids = sorted(int(i) for i in s.index.ids() if int(i) not in s.index.tombstones)
        db_ids = [r[0] for r in c.execute("SELECT id FROM vectors ORDER BY id")]
        assert idx_ids == db_ids
        # the vectors are the ones written: the nearest neighbour of each batch's descriptor 0 is itself
        for b in sorted(present)[-3:]:
            q = np.frombuffer(vec_for(b, 0), dtype="<f4")
            r, _ = e.query(
                [
                    {
                        "FindDescriptor": {
                            "set": "d",
                            "k_neighbors": 1,
                            "distances": True,
                            "results": {"list": ["batch", "i"]},
                        }
                    }
                ],
                [q.tobytes()],
            )
            assert r[0]["FindDescriptor"]["entities"][0] == {"_distance": 0.0, "batch": b, "i": 0}
        return max(present, default=-1)
    finally:
        e.close()


def test_kill_9_mid_stream(tmp_path: Path) -> None:
    data = tmp_path / "db"
    rng = random.Random(42)
    acked: set[int] = set()
    nxt = 0
    for _ in range(ROUNDS):
        acked |= set(run_round(data, nxt, rng))
        nxt = verify(data, acked) + 1
    assert len(acked) >= ROUNDS
