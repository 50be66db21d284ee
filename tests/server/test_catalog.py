"""The data model on the embedded store: one set per model, refused to another model, atomic replace."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moments_server.catalog.catalog import Catalog, ModelMismatch
from moments_server.catalog.model import FrameRecord, VideoRecord
from moments_server.store.connector import open_connector

IDENTITY = {"model": "m", "pretrained": "t", "dimensions": 4, "fingerprint": "f1"}


def video(vid: str, frames: int, **metadata: object) -> VideoRecord:
    return VideoRecord(
        vid,
        f"{vid}.mp4",
        float(frames),
        10.0,
        64,
        64,
        "h264",
        "mp4",
        "2026-11-26T06:00:00.000+00:00",
        frames,
        100,
        "0" * 64,
        dict(metadata),
    )  # type: ignore[arg-type]


def unit(rows: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(rows, 4)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_set_identity_is_checked(tmp_path: Path) -> None:
    connector = open_connector(f"embedded:{tmp_path}")
    try:
        Catalog(connector, "s", 4, IDENTITY).ensure_descriptor_set()
        Catalog(connector, "s", 4, IDENTITY).ensure_descriptor_set()  # same model: fine
        with pytest.raises(ModelMismatch, match="fingerprint='f1'"):
            Catalog(connector, "s", 4, {**IDENTITY, "fingerprint": "f2"}).ensure_descriptor_set()
        with pytest.raises(ModelMismatch, match="holds 4-d vectors, the model makes 8"):
            Catalog(connector, "s", 8, IDENTITY).ensure_descriptor_set()
    finally:
        connector.close()


def test_replace_is_atomic_and_search_maps_frames_to_clips(tmp_path: Path) -> None:
    connector = open_connector(f"embedded:{tmp_path}")
    try:
        catalog = Catalog(connector, "s", 4, IDENTITY)
        catalog.ensure_descriptor_set()
        frames = [FrameRecord(s + 0.25, float(s), s + 1.0) for s in range(3)]
        vectors = unit(3, 0)
        catalog.add_video(video("a", 3, camera="n"), b"bytes", frames, vectors, [b"j0", b"j1", b"j2"], replace=False)
        hits = catalog.search(vectors[1], 1, None, with_thumbnails=True)
        assert [(h.video_id, h.frame_s, h.start_s, h.end_s, h.thumbnail, h.metadata) for h in hits] == [
            ("a", 1.25, 1.0, 2.0, b"j1", {"camera": "n"})
        ]
        assert hits[0].score == pytest.approx(1.0, abs=1e-5)

        catalog.add_video(video("a", 1, camera="s"), b"new", frames[:1], unit(1, 1), None, replace=True)
        assert catalog.get_video("a").metadata == {"camera": "s"}  # type: ignore[union-attr]
        assert len(catalog.search(vectors[1], 10, {"video_id": ["==", "a"]}, False)) == 1
        assert catalog.delete_video("a") == (1, 1)
        assert catalog.search(vectors[1], 10, None, False) == []
    finally:
        connector.close()
