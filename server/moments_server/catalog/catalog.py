"""The video catalog: runs the data model's queries on a store connector and reads their answers.

Blocking (the connectors are); the transport calls it from a thread pool.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from moments_server import metrics
from moments_server.catalog import queries
from moments_server.catalog.model import INTERRUPTED, FrameRecord, VideoRecord, user_metadata
from moments_server.errors import ModelMismatch, StoreError, VideoGone
from moments_server.store.connector import QueryRunner
from moments_server.store.file_blob import FileBlob

log = logging.getLogger(__name__)


@dataclass
class Hit:
    video_id: str
    frame_s: float
    start_s: float
    end_s: float
    score: float
    metadata: dict[str, Any]
    thumbnail: bytes | None = None
    key: str = ""  # the frame descriptor's store id: the same frame found by several query vectors
    vector: np.ndarray | None = None  # the stored frame vector, when asked for
    # shot-aware videos: the frame's shot and its range (shot_end_s None while unknown)
    shot: int | None = None
    shot_start_s: float | None = None
    shot_end_s: float | None = None


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None


def _first(response: Any, command: str) -> dict[str, Any]:
    return response[0][command] if isinstance(response, list) else {}


class Catalog:
    def __init__(
        self, connector: QueryRunner, descriptor_set: str, dims: int, identity: dict[str, Any], engine: str = "Flat"
    ) -> None:
        self.connector = connector
        self.descriptor_set = descriptor_set
        self.dims = dims
        self.identity = identity
        self.engine = engine
        self._metadata_types: dict[str, str] = {}
        self._types_lock = threading.Lock()

    def run(
        self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = (), kind: str = "query"
    ) -> tuple[list[Any], list[bytes]]:
        started = time.perf_counter()
        try:
            response, out_blobs = self.connector.query(commands, blobs)
        finally:
            metrics.STORE_TIME.labels(kind).observe(time.perf_counter() - started)
        if not isinstance(response, list):
            info = response.get("info", response) if isinstance(response, dict) else response
            raise StoreError(f"store error in {kind}: {info}")
        for i, result in enumerate(response):
            ((name, body),) = result.items()
            if isinstance(body, dict) and body.get("status", 0) < 0:
                raise StoreError(f"store error in {kind}, command {i} ({name}): {body.get('info', body)}")
        return response, out_blobs

    # -- set ------------------------------------------------------------------------------------------------
    def ensure_descriptor_set(self) -> None:
        """Create the model's set on first use; refuse to serve a set made by another model."""
        found = self._find_set()
        if found is None:
            props = {f"moments_{k}": v for k, v in self.identity.items()}
            # Replicas starting at once: another one may create the set between the find and the add (the add
            # then answers status 2, "exists", or an error): its model must be this one.
            try:
                response, _ = self.run(
                    queries.add_descriptor_set(self.descriptor_set, self.dims, self.engine, props), kind="schema"
                )
                created = _first(response, "AddDescriptorSet").get("status", 0) == 0
            except StoreError:
                created = False
            if created:
                log.info("created descriptor set %s (%d dims, CS, %s)", self.descriptor_set, self.dims, self.engine)
                return
            found = self._find_set()
            if found is None:
                raise StoreError(f"descriptor set {self.descriptor_set} could not be created")
        self._check_identity(found)

    def _find_set(self) -> dict[str, Any] | None:
        response, _ = self.run(queries.find_descriptor_set(self.descriptor_set), kind="schema")
        entities = _first(response, "FindDescriptorSet").get("entities") or []
        return entities[0] if entities else None

    def _check_identity(self, found: dict[str, Any]) -> None:
        dims = found.get("_dimensions")
        if dims is not None and int(dims) != self.dims:
            raise ModelMismatch(
                f"descriptor set {self.descriptor_set} holds {dims}-d vectors, the model makes {self.dims}"
            )
        for key, value in self.identity.items():
            stored = found.get(f"moments_{key}")
            if stored is not None and stored != value:
                raise ModelMismatch(
                    f"descriptor set {self.descriptor_set} was made by a model with {key}={stored!r}, "
                    f"this server serves {key}={value!r}; use another model directory or data dir"
                )

    # -- videos ---------------------------------------------------------------------------------------------
    def get_video(self, video_id: str) -> VideoRecord | None:
        response, _ = self.run(queries.find_video(video_id), kind="get_video")
        entities = _first(response, "FindVideo").get("entities") or []
        return VideoRecord.from_properties(entities[0]) if entities else None

    def list_videos(self, offset: int, limit: int) -> tuple[list[VideoRecord], bool]:
        """One page, and whether more follow (asks for one extra row to know)."""
        response, _ = self.run(queries.list_videos(offset, limit + 1), kind="list_videos")
        entities = _first(response, "FindVideo").get("entities") or []
        return [VideoRecord.from_properties(e) for e in entities[:limit]], len(entities) > limit

    def add_video(
        self,
        video: VideoRecord,
        blob: bytes | FileBlob,
        frames: Sequence[FrameRecord],
        vectors: np.ndarray,
        thumbnails: Sequence[bytes] | None,
        replace: bool,
    ) -> None:
        vector_blobs = [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vectors]
        commands, blobs = queries.add_video(video, blob, frames, vector_blobs, thumbnails, self.descriptor_set, replace)
        self.run(commands, blobs, kind="add_video")
        self.note_metadata(video.metadata)

    def add_segment(
        self,
        video: VideoRecord,
        index: int,
        blob: bytes,
        byte_start: int,
        frames: Sequence[FrameRecord],
        vectors: np.ndarray,
        thumbnails: Sequence[bytes] | None,
    ) -> None:
        """A LIVE video's next segment (queries.add_segment); VideoGone when the video was deleted meanwhile."""
        vector_blobs = [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vectors]
        commands, blobs = queries.add_segment(
            video, index, blob, byte_start, frames, vector_blobs, thumbnails, self.descriptor_set
        )
        try:
            self.run(commands, blobs, kind="add_segment")
        except StoreError:
            if self.get_video(video.video_id) is None:
                raise VideoGone(f"video {video.video_id!r} was deleted while it was streaming") from None
            raise

    def find_upload(self, upload_id: str) -> VideoRecord | None:
        response, _ = self.run(queries.find_upload(upload_id), kind="find_upload")
        entities = _first(response, "FindVideo").get("entities") or []
        return VideoRecord.from_properties(entities[0]) if entities else None

    def find_expired_upload(self, upload_id: str) -> VideoRecord | None:
        """The video of a stream that expired (upload_ttl_s), by its former upload id."""
        response, _ = self.run(queries.find_expired_upload(upload_id), kind="find_upload")
        entities = _first(response, "FindVideo").get("entities") or []
        return VideoRecord.from_properties(entities[0]) if entities else None

    def idle_uploads(self, before: float) -> list[VideoRecord]:
        """Videos of LIVE/FRAMES streams, live or interrupted, with no commit since `before` (epoch s)."""
        response, _ = self.run(queries.idle_uploads(before), kind="idle_uploads")
        entities = _first(response, "FindVideo").get("entities") or []
        return [VideoRecord.from_properties(e) for e in entities if e.get("upload_id")]

    def expire_upload(self, video: VideoRecord) -> bool:
        """Drop a stream's resume state (queries.expire_upload); False when it changed meanwhile."""
        response, _ = self.run(queries.expire_upload(video.video_id, video.upload_id), kind="expire_upload")
        if int(_first(response, "UpdateVideo").get("count", 0)) == 0:
            return False
        if video.state != INTERRUPTED:
            self.run(queries.mark_frames(video.video_id, INTERRUPTED), kind="expire_upload")
        return True

    def stored_bytes(self, video_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of a LIVE video's stream, from its blob and its segment blobs."""
        response, blobs = self.run(queries.stored_bytes(video_id, start, end), kind="stored_bytes")
        video = (_first(response, "FindVideo").get("entities") or [{}])[0]
        pieces: list[tuple[int, bytes]] = []
        if "_blob_index" in video:
            pieces.append((0, blobs[video["_blob_index"]]))
        for seg in response[1]["FindBlob"].get("entities") or []:
            pieces.append((int(seg["byte_start"]), blobs[seg["_blob_index"]]))
        out = bytearray()
        for at, data in sorted(pieces, key=lambda p: p[0]):
            lo, hi = max(start, at), min(end, at + len(data))
            if lo < hi:
                out += data[lo - at : hi - at]
        if len(out) != max(end - start, 0):
            raise StoreError(f"video {video_id!r}: bytes {start}-{end} are not all stored ({len(out)} found)")
        return bytes(out)

    def set_state(self, video: VideoRecord) -> None:
        self.run(queries.set_state(video), kind="set_state")

    def interrupt_live_streams(self) -> list[str]:
        """Mark "interrupted" the videos (and their frames) left "live" by a server that stopped mid-stream.

        Call at start, and only where this process owns the store (no other server may be streaming into
        it). They stay resumable: a resume sets them "live" again. Returns their ids."""
        response, _ = self.run(queries.find_live(), kind="find_live")
        ids = []
        for entity in _first(response, "FindVideo").get("entities") or []:
            video = VideoRecord.from_properties(entity)
            video.state = INTERRUPTED
            self.set_state(video)
            ids.append(video.video_id)
        if ids:
            log.warning("%d live stream(s) ended with the last server, now interrupted: %s", len(ids), ", ".join(ids))
        return ids

    def delete_video(self, video_id: str) -> tuple[int, int]:
        """Returns (videos deleted, descriptors deleted)."""
        response, _ = self.run(queries.delete_video(video_id, self.descriptor_set), kind="delete_video")
        descriptors = int(response[1]["DeleteDescriptor"].get("count", 0))
        videos = int(response[-1]["DeleteVideo"].get("count", 0))
        return videos, descriptors

    # -- metadata keys ------------------------------------------------------------------------------------
    def note_metadata(self, metadata: dict[str, Any]) -> None:
        with self._types_lock:
            for key, kind in queries.key_types(metadata).items():
                self._metadata_types.setdefault(key, kind)

    def metadata_types(self, unknown: Sequence[str] = ()) -> dict[str, str]:
        """Caller metadata keys stored so far, with their value type.

        Keys in `unknown` that this process has not seen are looked up in the store's key registry (another
        replica may have stored them a moment ago), so a filter on a committed key is never refused."""
        with self._types_lock:
            missing = [k for k in dict.fromkeys(unknown) if k and k not in self._metadata_types]
        if missing:
            response, _ = self.run(queries.find_keys(missing), kind="metadata_keys")
            found = response[0]["FindEntity"].get("entities") or []
            with self._types_lock:
                for e in found:
                    self._metadata_types.setdefault(str(e["key"]), str(e["type"]))
        with self._types_lock:
            return dict(self._metadata_types)

    def load_metadata_types(self) -> None:
        """At start: the registry's keys. The first start on a store written before the registry also registers
        the keys of its videos (one scan of them, then a marker so that later starts skip it)."""
        response, _ = self.run(queries.find_keys(None), kind="metadata_keys")
        registered = {str(e["key"]): str(e["type"]) for e in response[0]["FindEntity"].get("entities") or []}
        backfilled = registered.pop(queries.REGISTRY_MARKER, None) is not None
        with self._types_lock:
            self._metadata_types.update(registered)
        if backfilled:
            return
        offset, page = 0, 500
        legacy: dict[str, str] = {}
        while True:
            videos, more = self.list_videos(offset, page)
            for v in videos:
                for key, kind in queries.key_types(v.metadata).items():
                    if key not in registered:
                        legacy.setdefault(key, kind)
            if not more:
                break
            offset += page
        self.run(queries.register_keys({**legacy, queries.REGISTRY_MARKER: "marker"}), kind="metadata_keys")
        with self._types_lock:
            for key, kind in legacy.items():
                self._metadata_types.setdefault(key, kind)

    # -- search ---------------------------------------------------------------------------------------------
    def search(
        self, vector: np.ndarray, k: int, constraints: dict[str, list[Any]] | None, with_thumbnails: bool
    ) -> list[Hit]:
        return self.search_many([vector], k, constraints, with_thumbnails)[0]

    def search_many(
        self,
        vectors: Sequence[np.ndarray],
        k: int,
        constraints: dict[str, list[Any]] | None,
        with_thumbnails: bool,
        with_vectors: bool = False,
    ) -> list[list[Hit]]:
        """The k nearest frames of each query vector, in one transaction (see queries.search)."""
        blobs_in = [np.ascontiguousarray(v, dtype="<f4").tobytes() for v in vectors]
        response, blobs = self.run(
            queries.search(self.descriptor_set, k, constraints, with_thumbnails, len(vectors), with_vectors),
            blobs_in,
            kind="search",
        )
        per_query = 3 if with_thumbnails else 2
        return [
            self._hits(response[i * per_query : (i + 1) * per_query], blobs, with_thumbnails, with_vectors)
            for i in range(len(vectors))
        ]

    def _hits(self, response: list[Any], blobs: list[bytes], with_thumbnails: bool, with_vectors: bool) -> list[Hit]:
        frames = response[0]["FindDescriptor"].get("entities") or []
        clips_by_frame: dict[str, list[dict[str, Any]]] = response[1]["FindClip"].get("entities") or {}
        thumbs_by_clip: dict[str, list[dict[str, Any]]] = {}
        if with_thumbnails:
            thumbs_by_clip = response[2]["FindImage"].get("entities") or {}
        hits = []
        for frame in frames:
            clips = clips_by_frame.get(frame["_uniqueid"]) or []
            clip = clips[0] if clips else {}
            thumbnail = None
            if clip and thumbs_by_clip.get(clip.get("_uniqueid", "")):
                index = thumbs_by_clip[clip["_uniqueid"]][0].get("_blob_index")
                thumbnail = blobs[index] if index is not None else None
            vector = None
            if with_vectors and frame.get("_blob_index") is not None:
                vector = np.frombuffer(blobs[frame["_blob_index"]], dtype="<f4")
            hits.append(
                Hit(
                    video_id=str(frame["video_id"]),
                    frame_s=float(frame["frame_s"]),
                    start_s=float(clip.get("start_s", frame["start_s"])),
                    end_s=float(clip.get("end_s", frame["end_s"])),
                    score=float(frame["_distance"]),
                    metadata=user_metadata(frame),
                    thumbnail=thumbnail,
                    key=str(frame["_uniqueid"]),
                    vector=vector,
                    shot=int(frame["shot"]) if frame.get("shot") is not None else None,
                    shot_start_s=_number(frame.get("shot_start_s")),
                    shot_end_s=_number(frame.get("shot_end_s")),
                )
            )
        return hits
