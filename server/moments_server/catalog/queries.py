"""Builders for the ApertureDB queries Moments sends: pure functions, JSON commands + blob order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moments_server.catalog.model import (
    FRAME_EDGE,
    INTERRUPTED,
    LIVE,
    METADATA_KEY_CLASS,
    SEGMENT_EDGE,
    THUMBNAIL_EDGE,
    FrameRecord,
    PropertyValue,
    VideoRecord,
    time_offset,
    value_type,
)
from moments_server.store.file_blob import FileBlob

Command = dict[str, Any]


def find_descriptor_set(name: str) -> list[Command]:
    return [
        {
            "FindDescriptorSet": {
                "with_name": name,
                "dimensions": True,
                "metrics": True,
                "results": {"all_properties": True},
            }
        }
    ]


def add_descriptor_set(name: str, dims: int, engine: str, properties: dict[str, Any]) -> list[Command]:
    return [
        {
            "AddDescriptorSet": {
                "name": name,
                "dimensions": dims,
                "metric": "CS",
                "engine": engine,
                "properties": properties,
            }
        }
    ]


def _by_video(video_id: str) -> dict[str, list[Any]]:
    return {"video_id": ["==", video_id]}


def find_video(video_id: str) -> list[Command]:
    return [{"FindVideo": {"constraints": _by_video(video_id), "results": {"all_properties": True}}}]


def list_videos(offset: int, limit: int) -> list[Command]:
    return [
        {
            "FindVideo": {
                "results": {"all_properties": True},
                "sort": {"key": "ingested_at", "order": "ascending"},
                "offset": offset,
                "limit": limit,
            }
        }
    ]


def delete_video(video_id: str, descriptor_set: str) -> list[Command]:
    """Everything of one video, thumbnails and descriptors before the clips and the video they hang on."""
    by_video = _by_video(video_id)
    return [
        {"DeleteImage": {"constraints": by_video}},
        {"DeleteDescriptor": {"set": descriptor_set, "constraints": by_video}},
        {"DeleteClip": {"constraints": by_video}},
        {"DeleteBlob": {"constraints": by_video}},  # a LIVE video's segments
        {"DeleteVideo": {"constraints": by_video}},
    ]


def add_video(
    video: VideoRecord,
    video_blob: bytes | FileBlob,
    frames: Sequence[FrameRecord],
    vectors: Sequence[bytes],
    thumbnails: Sequence[bytes] | None,
    descriptor_set: str,
    replace: bool,
) -> tuple[list[Command], list[bytes | FileBlob]]:
    """One transaction: (the old video's removal,) the Video, then per frame its Clip, Descriptor and thumbnail.

    One transaction makes the video visible whole or not at all, and a replace atomic.
    """
    commands: list[Command] = delete_video(video.video_id, descriptor_set) if replace else []
    blobs: list[bytes | FileBlob] = [video_blob]
    commands.append({"AddVideo": {"_ref": 1, "properties": video.properties()}})
    add_frames(commands, blobs, video, frames, vectors, thumbnails, descriptor_set)
    commands += register_keys(key_types(video.metadata))
    return commands, blobs


def key_types(metadata: dict[str, Any]) -> dict[str, str]:
    return {key: value_type(value) for key, value in metadata.items()}


# A registry entity with this key (never a valid metadata key) says the keys of videos stored before the
# registry existed have been registered: later starts skip scanning the videos.
REGISTRY_MARKER = ""


def register_keys(types: dict[str, str]) -> list[Command]:
    """Adds each key's registry entity unless it exists (the first type stored for a key is its type)."""
    return [
        {
            "AddEntity": {
                "class": METADATA_KEY_CLASS,
                "properties": {"key": key, "type": kind},
                "if_not_found": {"key": ["==", key]},
            }
        }
        for key, kind in sorted(types.items())
    ]


def find_keys(keys: Sequence[str] | None) -> list[Command]:
    """The registry entities of these keys (None: all of them)."""
    body: Command = {"with_class": METADATA_KEY_CLASS, "results": {"list": ["key", "type"]}}
    if keys is not None:
        body["constraints"] = {"key": ["in", list(keys)]}
    return [{"FindEntity": body}]


def add_segment(
    video: VideoRecord,
    index: int,
    segment_blob: bytes,
    byte_start: int,
    frames: Sequence[FrameRecord],
    vectors: Sequence[bytes],
    thumbnails: Sequence[bytes] | None,
    descriptor_set: str,
) -> tuple[list[Command], list[bytes | FileBlob]]:
    """A LIVE video's next segment, in one transaction: its bytes as a Blob on the video, its frames, and the
    video's committed totals. The video must still exist (FindVideo with `unique`): a stream whose video was
    deleted meanwhile fails its commit."""
    commands: list[Command] = [{"FindVideo": {"_ref": 1, "constraints": _by_video(video.video_id), "unique": True}}]
    blobs: list[bytes | FileBlob] = []
    if segment_blob:
        props = {"video_id": video.video_id, "segment": index, "byte_start": byte_start}
        props["byte_end"] = byte_start + len(segment_blob)
        commands.append(
            {"AddBlob": {"properties": props, "connect": {"ref": 1, "class": SEGMENT_EDGE, "direction": "in"}}}
        )
        blobs.append(segment_blob)
    add_frames(commands, blobs, video, frames, vectors, thumbnails, descriptor_set)
    commands.append({"UpdateVideo": {"ref": 1, "properties": live_totals(video)}})
    return commands, blobs


def live_totals(video: VideoRecord) -> dict[str, Any]:
    return {
        "state": video.state,
        "frames": video.frames,
        "size_bytes": video.size_bytes,
        "duration_s": video.duration_s,
        "restart_offset": video.restart_offset,
        "active_at": video.active_at,
    }


def find_live() -> list[Command]:
    """The videos whose state is "live" (a stream commits them)."""
    return [{"FindVideo": {"constraints": {"state": ["==", LIVE]}, "results": {"all_properties": True}}}]


def find_upload(upload_id: str) -> list[Command]:
    return [{"FindVideo": {"constraints": {"upload_id": ["==", upload_id]}, "results": {"all_properties": True}}}]


def find_expired_upload(upload_id: str) -> list[Command]:
    return [
        {
            "FindVideo": {
                "constraints": {"expired_upload_id": ["==", upload_id]},
                "results": {"list": ["video_id", "active_at"]},
            }
        }
    ]


def idle_uploads(before: float) -> list[Command]:
    """Videos of LIVE/FRAMES streams whose last commit was before `before` (epoch seconds)."""
    return [
        {
            "FindVideo": {
                "constraints": {"active_at": ["<", before], "state": ["in", [LIVE, INTERRUPTED]]},
                "results": {"list": ["video_id", "upload_id", "state", "active_at"]},
            }
        }
    ]


def expire_upload(video_id: str, upload_id: str) -> list[Command]:
    """A stream that can no longer be resumed: its video and frames "interrupted", its resume state dropped
    (the id kept as expired_upload_id, so that a resume is told why). Matches only while the video still
    has that upload id (a stream resumed meanwhile keeps it)."""
    match = {"video_id": ["==", video_id], "upload_id": ["==", upload_id]}
    return [
        {
            "UpdateVideo": {
                "constraints": match,
                "properties": {"state": INTERRUPTED, "expired_upload_id": upload_id},
                "remove_props": ["upload_id", "stream_start_s", "init_end", "restart_offset"],
            }
        }
    ]


def mark_frames(video_id: str, state: str) -> list[Command]:
    return [{"UpdateDescriptor": {"constraints": _by_video(video_id), "properties": {"state": state}}}]


def stored_bytes(video_id: str, start: int, end: int) -> list[Command]:
    """The blobs of a LIVE video that hold bytes [start, end): its own (the first segment), then its segments."""
    return [
        {
            "FindVideo": {
                "_ref": 1,
                "constraints": _by_video(video_id),
                "blobs": True,
                "results": {"list": ["video_id"]},
            }
        },
        {
            "FindBlob": {
                "is_connected_to": {"ref": 1, "connection_class": SEGMENT_EDGE},
                "constraints": {"byte_end": [">", start], "byte_start": ["<", end]},
                "blobs": True,
                "results": {"list": ["byte_start", "byte_end"], "sort": {"key": "byte_start", "order": "ascending"}},
            }
        },
    ]


def set_state(video: VideoRecord) -> list[Command]:
    """A LIVE video's end: its state and totals, on the video and on every frame (searches filter on it)."""
    by_video = _by_video(video.video_id)
    return [
        {"UpdateVideo": {"constraints": by_video, "properties": live_totals(video)}},
        {"UpdateDescriptor": {"constraints": by_video, "properties": {"state": video.state}}},
    ]


def add_frames(
    commands: list[Command],
    blobs: list[bytes | FileBlob],
    video: VideoRecord,
    frames: Sequence[FrameRecord],
    vectors: Sequence[bytes],
    thumbnails: Sequence[bytes] | None,
    descriptor_set: str,
) -> None:
    """Per frame its Clip (on the video bound to ref 1), Descriptor and thumbnail; refs from 2 on."""
    frame_props: dict[str, PropertyValue] = dict(video.metadata)
    frame_props["state"] = video.state
    for i, frame in enumerate(frames):
        clip_ref = i + 2
        commands.append(
            {
                "AddClip": {
                    "_ref": clip_ref,
                    "video_ref": 1,
                    "time_offset_range": {"start": time_offset(frame.start_s), "stop": time_offset(frame.end_s)},
                    "properties": {
                        "video_id": video.video_id,
                        "start_s": frame.start_s,
                        "end_s": frame.end_s,
                        **frame.shot_properties(),
                    },
                }
            }
        )
        commands.append(
            {
                "AddDescriptor": {
                    "set": descriptor_set,
                    "properties": {
                        **frame_props,
                        "video_id": video.video_id,
                        "frame_s": frame.time_s,
                        "start_s": frame.start_s,
                        "end_s": frame.end_s,
                        **frame.shot_properties(),
                    },
                    "connect": {"ref": clip_ref, "class": FRAME_EDGE},
                }
            }
        )
        blobs.append(vectors[i])
        if thumbnails is not None:
            commands.append(
                {
                    "AddImage": {
                        "properties": {"video_id": video.video_id, "frame_s": frame.time_s},
                        "connect": {"ref": clip_ref, "class": THUMBNAIL_EDGE},
                    }
                }
            )
            blobs.append(thumbnails[i])


def search(
    descriptor_set: str,
    k: int,
    constraints: dict[str, list[Any]] | None,
    with_thumbnails: bool,
    queries: int = 1,
    with_vectors: bool = False,
) -> list[Command]:
    """kNN over the frames, then the clip of each hit through its graph edge (and its thumbnail).

    With several query vectors (one blob each, in order), one such group of commands per vector, all in
    one transaction so that every kNN sees the same frames; with_vectors returns the hits' stored vectors.
    """
    commands: list[Command] = []
    for i in range(queries):
        frames_ref, clips_ref = 2 * i + 1, 2 * i + 2
        find: dict[str, Any] = {
            "set": descriptor_set,
            "k_neighbors": k,
            "distances": True,
            "_ref": frames_ref,
            "results": {"all_properties": True},
        }
        if with_vectors:
            find["blobs"] = True
        if constraints:
            find["constraints"] = constraints
        commands.append({"FindDescriptor": find})
        commands.append(
            {
                "FindClip": {
                    "is_connected_to": {"ref": frames_ref, "connection_class": FRAME_EDGE},
                    "_ref": clips_ref,
                    "results": {"list": ["_uniqueid", "start_s", "end_s", "video_id"], "group_by_source": True},
                }
            }
        )
        if with_thumbnails:
            commands.append(
                {
                    "FindImage": {
                        "is_connected_to": {"ref": clips_ref, "connection_class": THUMBNAIL_EDGE},
                        "blobs": True,
                        "results": {"list": ["frame_s"], "group_by_source": True},
                    }
                }
            )
    return commands
