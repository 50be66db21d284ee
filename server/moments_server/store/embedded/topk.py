"""Top-k answers as FAISS gives them, `(distances, ids)` arrays per query: brute-force ranking, merging two
answers, and ApertureDB's order for ties."""

from __future__ import annotations

import faiss
import numpy as np


def faiss_metric(metric: str) -> int:
    return faiss.METRIC_L2 if metric == "L2" else faiss.METRIC_INNER_PRODUCT


def no_hits(nq: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros((nq, 0), np.float32), np.zeros((nq, 0), np.int64)


def exact_top_k(q: np.ndarray, xb: np.ndarray, ids: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top k of prepared vectors `xb` (row ids `ids`) for prepared queries `q`."""
    kk = min(k, len(ids))
    if kk == 0:
        return no_hits(q.shape[0])
    d, pos = faiss.knn(q, xb, kk, metric=faiss_metric(metric))
    return d, np.where(pos >= 0, ids[np.maximum(pos, 0)], -1)


def merge_top_k(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], k: int, metric: str
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of two (distances, ids) answers per query; ids -1 (no hit) sort last."""
    if not b[1].shape[1]:
        return a
    if not a[1].shape[1]:
        return b
    d = np.concatenate([a[0], b[0]], axis=1)
    i = np.concatenate([a[1], b[1]], axis=1)
    key = np.where(i < 0, np.inf, d if metric == "L2" else -d)
    order = np.argsort(key, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)


def in_tie_order(found: tuple[np.ndarray, np.ndarray], metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Best first, equal distances in insertion order (ids grow with insertion), as ApertureDB answers;
    faiss's inner-product heaps return ties in reverse. Ids -1 (no hit) last."""
    d, i = found
    if i.shape[1] < 2:
        return found
    key = np.where(i < 0, np.inf, d if metric == "L2" else -d)
    tiebreak = np.where(i < 0, np.iinfo(np.int64).max, i)
    order = np.lexsort((tiebreak, key), axis=1)
    return np.take_along_axis(d, order, 1), np.take_along_axis(i, order, 1)
