"""The files of `moments ingest`: files as given and video files under folders (recursive), with their video ids."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from moments_client._common import VIDEO_ID_CHARS, VIDEO_ID_MAX

VIDEO_EXTENSIONS = frozenset(
    [
        ".mp4",
        ".m4v",
        ".mov",
        ".mkv",
        ".webm",
        ".avi",
        ".mpg",
        ".mpeg",
        ".ts",
        ".mts",
        ".m2ts",
        ".flv",
        ".wmv",
        ".3gp",
        ".ogv",
        ".mxf",
        ".gif",
    ]
)


@dataclass
class Job:
    path: Path
    video_id: str
    size: int | None = None
    status: str = "pending"
    frames: int = 0
    duration_s: float = 0.0
    seconds: float = 0.0
    reason: str = ""


def _sanitize(text: str) -> str:
    cleaned = re.sub(rf"[^{VIDEO_ID_CHARS}]+", "_", text).strip("_") or "video"
    return cleaned[-VIDEO_ID_MAX:]


def collect(paths: Sequence[str], id_from: str) -> list[Job]:
    """Files as given (any extension) and video files under folders (recursive), with their ids."""
    jobs: list[Job] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in VIDEO_EXTENSIONS)
            if not files:
                jobs.append(Job(p, _sanitize(p.name), status="failed", reason="no video files in this folder"))
            for f in files:
                rel = f.relative_to(p).with_suffix("")
                vid = f.stem if id_from == "name" else ":".join((p.resolve().name, *rel.parts))
                jobs.append(Job(f, _sanitize(vid)))
        else:
            rel = p.with_suffix("")
            vid = p.stem if id_from == "name" else ":".join(part for part in rel.parts if part not in ("/", ".", ".."))
            jobs.append(Job(p, _sanitize(vid)))
    seen: dict[str, Job] = {}
    for job in jobs:
        if job.status == "failed":
            continue
        if job.video_id in seen:
            job.status = "failed"
            job.reason = f"id {job.video_id!r} is also used by {seen[job.video_id].path}; try --id-from path"
        else:
            seen[job.video_id] = job
    return jobs


def readable(jobs: Sequence[Job]) -> list[Job]:
    """The pending jobs whose file opens: an unreadable one fails here, with the OS's reason, before any upload."""
    for job in jobs:
        if job.status != "pending":
            continue
        try:
            with job.path.open("rb") as f:
                f.read(1)
            job.size = job.path.stat().st_size
        except OSError as e:
            job.status, job.reason = "failed", f"cannot read the file: {e.strerror or e}"
    return [j for j in jobs if j.status == "pending"]
