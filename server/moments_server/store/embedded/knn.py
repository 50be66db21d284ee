"""k-nearest-neighbour search of one descriptor set for FindDescriptor: the set's index, or an exact
ranking of a filter's candidates."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .filters import Select
from .params import json_ids
from .sets import SetInfo
from .vectors import prepare

if TYPE_CHECKING:
    from .tx import Tx


EXACT_MAX = 50_000  # filtered kNN over at most this many candidates is computed exactly (numpy)


def knn(tx: Tx, s: SetInfo, q: np.ndarray, k: int, filtered: Select | None) -> list[list[tuple[int, float]]]:
    """Per query vector: [(id, _distance)] nearest first."""
    qp = prepare(q, s.metric)
    if filtered is None and not tx.set_has_pending(s.id):
        d, i = s.index.search(qp, k + 8)  # a little slack for ids a concurrent delete just removed
        out = []
        for drow, irow in zip(d, i, strict=True):
            out.append([(int(a), float(b)) for a, b in zip(irow, drow, strict=True) if a >= 0])
        return out
    sel = filtered or Select("_Descriptor")
    if filtered is None:
        sel.add("o.set_id = ?", [s.id])
    cand = [r[0] for r in tx.conn.execute(f"SELECT o.id FROM objects o WHERE {sel.sql()}", sel.params)]
    if not cand:
        return [[] for _ in range(q.shape[0])]
    if len(cand) > EXACT_MAX and not tx.set_has_pending(s.id):
        d, i = s.index.search_subset(qp, k, np.asarray(cand, dtype=np.int64))
        return [
            [(int(a), float(b)) for a, b in zip(ir, dr, strict=True) if a >= 0] for dr, ir in zip(d, i, strict=True)
        ]
    ids = np.sort(np.asarray(cand, dtype=np.int64))
    xb = None if tx.set_has_pending(s.id) else s.index.reconstruct(ids)
    if xb is None:  # rows the index does not hold (yet): read this snapshot's vectors from SQLite
        rows = tx.conn.execute(
            "SELECT id, vec FROM vectors WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id",
            (json_ids(cand),),
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        xb = prepare(np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), s.dims), s.metric)
    out = []
    for qv in qp:
        if s.metric == "L2":
            diff = xb - qv
            dist = np.einsum("ij,ij->i", diff, diff, dtype=np.float32)
            order = np.lexsort((ids, dist))[:k]
        else:
            dist = np.einsum("ij,j->i", xb, qv)  # not BLAS: its threads spin-wait on a busy box
            order = np.lexsort((ids, -dist))[:k]
        out.append([(int(ids[j]), float(dist[j])) for j in order])
    return out
