"""Shared helpers for the store tests: clustered vectors and batched ingest."""

from __future__ import annotations

from typing import Any

import numpy as np


def clustered(n: int, dims: int, clusters: int = 20, seed: int = 0, latent: int = 16, noise: float = 0.1) -> np.ndarray:
    """Clusters shaped like embeddings: each cluster is a centre plus a random low-dimensional
    (`latent`) subspace, plus a little isotropic noise. The centres and subspaces are fixed for a
    given (clusters, dims); `seed` draws the points, so database and queries share the clusters."""
    fixed = np.random.default_rng(1234 + clusters * 1000 + dims)
    centres = fixed.normal(size=(clusters, dims))
    bases = fixed.normal(size=(clusters, latent, dims)) * 0.4
    rng = np.random.default_rng(seed)
    which = rng.integers(0, clusters, size=n)
    z = rng.normal(size=(n, latent))
    x = centres[which] + np.einsum("nl,nld->nd", z, bases[which]) + noise * rng.normal(size=(n, dims))
    return x.astype(np.float32)


def ingest(engine: Any, set_name: str, vecs: np.ndarray, batch: int = 1000, videos: int = 10, start: int = 0) -> None:
    """AddDescriptor in batched queries; descriptor i belongs to video 'v{i % videos}', frame_s=i."""
    for lo in range(0, len(vecs), batch):
        q, blobs = [], []
        for i in range(lo, min(lo + batch, len(vecs))):
            n = start + i
            q.append(
                {
                    "AddDescriptor": {
                        "set": set_name,
                        "properties": {"video_id": f"v{n % videos}", "frame_s": float(n), "n": n},
                    }
                }
            )
            blobs.append(vecs[i].tobytes())
        r, _ = engine.query(q, blobs)
        assert isinstance(r, list), r


def brute(xb: np.ndarray, q: np.ndarray, k: int, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact (indices, distances) in float64, ApertureDB's convention per metric."""
    xb64, q64 = xb.astype(np.float64), q.astype(np.float64)
    if metric == "L2":
        d = ((xb64 - q64) ** 2).sum(1)
        order = np.argsort(d, kind="stable")[:k]
    else:
        if metric == "CS":
            xb64 = xb64 / np.linalg.norm(xb64, axis=1, keepdims=True)
            q64 = q64 / np.linalg.norm(q64)
        d = xb64 @ q64
        order = np.argsort(-d, kind="stable")[:k]
    return order, d[order]
