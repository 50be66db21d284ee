"""The data model on the embedded store: one set per model, refused to another model, atomic replace."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from moments_server.catalog import queries
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import FrameRecord, VideoRecord
from moments_server.errors import ModelMismatch
from moments_server.store.connector import open_connector
from tests.live import StoreListener

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


def race_for_set(url: str, name: str, n: int) -> dict[int, str]:
    """n catalogs (fingerprints f0, f1, f0, ...) create one set at once: what each ended with."""
    barrier = threading.Barrier(n)
    outcome: dict[int, str] = {}

    def start(i: int) -> None:
        connector = open_connector(url)
        try:
            barrier.wait()
            Catalog(connector, name, 4, {**IDENTITY, "fingerprint": f"f{i % 2}"}).ensure_descriptor_set()
            outcome[i] = f"f{i % 2}"
        except ModelMismatch:
            outcome[i] = "refused"
        finally:
            connector.close()

    threads = [threading.Thread(target=start, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcome


def test_replicas_creating_the_set_at_once_agree_on_its_model(tmp_path: Path) -> None:
    """Catalogs of two models race to create one set over the wire: one model wins, every catalog of the other
    is refused (none serves a set another model made), and none fails for the race itself."""
    listener = StoreListener(tmp_path / "adb", tmp_path)
    try:
        for round_ in range(4):
            outcome = race_for_set(listener.url, f"race{round_}", 6)
            served = {v for v in outcome.values() if v != "refused"}
            assert len(outcome) == 6 and len(served) == 1, outcome
            (winner,) = served
            assert all(v == (winner if f"f{i % 2}" == winner else "refused") for i, v in outcome.items()), outcome
    finally:
        listener.stop()


def test_a_set_made_between_find_and_add_is_checked(tmp_path: Path) -> None:
    """The losing side of that race, made deterministic: the set appears after this catalog looked for it."""

    class Late(Catalog):
        looked = False

        def _find_set(self) -> dict | None:
            if not self.looked:  # first look: not there yet; meanwhile another model creates it
                self.looked = True
                Catalog(self.connector, self.descriptor_set, 4, IDENTITY).ensure_descriptor_set()
                return None
            return super()._find_set()

    connector = open_connector(f"embedded:{tmp_path}")
    try:
        with pytest.raises(ModelMismatch, match="fingerprint='f1'"):
            Late(connector, "s", 4, {**IDENTITY, "fingerprint": "f2"}).ensure_descriptor_set()
        Late(connector, "s", 4, IDENTITY).ensure_descriptor_set()  # the same model: serves it
    finally:
        connector.close()


def test_metadata_keys_of_older_stores_are_registered_at_start(tmp_path: Path) -> None:
    connector = open_connector(f"embedded:{tmp_path}")
    try:
        catalog = Catalog(connector, "s", 4, IDENTITY)
        catalog.ensure_descriptor_set()
        frames = [FrameRecord(0.5, 0.0, 1.0)]
        blob = np.ascontiguousarray(unit(1, 0)[0], dtype="<f4").tobytes()
        commands, blobs = queries.add_video(
            video("old", 1, camera="n", floor=2), b"v", frames, [blob], None, "s", False
        )
        # as a store written before the key registry: no registry entities
        catalog.run([c for c in commands if "AddEntity" not in c], blobs)
        fresh = Catalog(connector, "s", 4, IDENTITY)
        assert fresh.metadata_types(["camera"]) == {}  # not registered: a replica could not know it
        Catalog(connector, "s", 4, IDENTITY).load_metadata_types()  # a replica starting registers it
        assert fresh.metadata_types(["camera", "floor"]) == {"camera": "string", "floor": "number"}
    finally:
        connector.close()
