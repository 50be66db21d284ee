"""Builders for the ApertureDB queries Moments sends: pure functions, JSON commands + blob order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from moments_server.catalog.model import (
    FRAME_EDGE,
    LIVE,
    SEGMENT_EDGE,
    THUMBNAIL_EDGE,
    FrameRecord,
    PropertyValue,
    VideoRecord,
    time_offset,
)

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
    video_blob: bytes,
    frames: Sequence[FrameRecord],
    vectors: Sequence[bytes],
    thumbnails: Sequence[bytes] | None,
    descriptor_set: str,
    replace: bool,
) -> tuple[list[Command], list[bytes]]:
    """One transaction: (the old video's removal,) the Video, then per frame its Clip, Descriptor and thumbnail.

    One transaction makes the video visible whole or not at all, and a replace atomic.
    """
    commands: list[Command] = delete_video(video.video_id, descriptor_set) if replace else []
    blobs: list[bytes] = [video_blob]
    commands.append({"AddVideo": {"_ref": 1, "properties": video.properties()}})
    add_frames(commands, blobs, video, frames, vectors, thumbnails, descriptor_set)
    return commands, blobs


def add_segment(
    video: VideoRecord,
    index: int,
    segment_blob: bytes,
    byte_start: int,
    frames: Sequence[FrameRecord],
    vectors: Sequence[bytes],
    thumbnails: Sequence[bytes] | None,
    descriptor_set: str,
) -> tuple[list[Command], list[bytes]]:
    """A LIVE video's next segment, in one transaction: its bytes as a Blob on the video, its frames, and the
    video's committed totals. The video must still exist (FindVideo with `unique`): a stream whose video was
    deleted meanwhile fails its commit."""
    commands: list[Command] = [{"FindVideo": {"_ref": 1, "constraints": _by_video(video.video_id), "unique": True}}]
    blobs: list[bytes] = []
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
    }


def find_live() -> list[Command]:
    """The videos whose state is "live" (a stream commits them)."""
    return [{"FindVideo": {"constraints": {"state": ["==", LIVE]}, "results": {"all_properties": True}}}]


def find_upload(upload_id: str) -> list[Command]:
    return [{"FindVideo": {"constraints": {"upload_id": ["==", upload_id]}, "results": {"all_properties": True}}}]


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
    blobs: list[bytes],
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
                    "properties": {"video_id": video.video_id, "start_s": frame.start_s, "end_s": frame.end_s},
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
    descriptor_set: str, k: int, constraints: dict[str, list[Any]] | None, with_thumbnails: bool
) -> list[Command]:
    """kNN over the frames, then the clip of each hit through its graph edge (and its thumbnail)."""
    find: dict[str, Any] = {
        "set": descriptor_set,
        "k_neighbors": k,
        "distances": True,
        "_ref": 1,
        "results": {"all_properties": True},
    }
    if constraints:
        find["constraints"] = constraints
    commands: list[Command] = [
        {"FindDescriptor": find},
        {
            "FindClip": {
                "is_connected_to": {"ref": 1, "connection_class": FRAME_EDGE},
                "_ref": 2,
                "results": {"list": ["_uniqueid", "start_s", "end_s", "video_id"], "group_by_source": True},
            }
        },
    ]
    if with_thumbnails:
        commands.append(
            {
                "FindImage": {
                    "is_connected_to": {"ref": 2, "connection_class": THUMBNAIL_EDGE},
                    "blobs": True,
                    "results": {"list": ["frame_s"], "group_by_source": True},
                }
            }
        )
    return commands
