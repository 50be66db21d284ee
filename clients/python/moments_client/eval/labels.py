"""The labelled set that ``moments eval`` reads: a JSON file of videos and queries with their relevant ranges.

    {
      "name": "my set",                                   # optional
      "videos": [
        {"id": "lobby-1", "path": "videos/lobby-1.mp4",   # path: relative to this file; needed for --ingest
         "metadata": {"camera": "north", "floor": 2}}     # optional, stored with the video by --ingest
      ],
      "queries": [
        {"id": "q1", "text": "a person opening a door",
         "relevant": [{"video_id": "lobby-1", "start_s": 12.0, "end_s": 15.5}]},
        {"id": "q2", "image": "queries/red-car.jpg",      # a JPEG/PNG, relative to this file
         "filters": {"video_ids": ["lobby-1"], "where": {"floor": {">=": 2}, "camera": "north"},
                     "start_s": 0, "end_s": 600},
         "relevant": [{"video_id": "lobby-1", "start_s": 40, "end_s": 44}]}
      ]
    }

A query has exactly one of ``text`` and ``image`` and at least one relevant range; every range names a
video of the set. ``where`` maps a metadata key to a value (equality) or to ``{operator: value}`` with the
operators ``==``, ``!=``, ``<``, ``<=``, ``>``, ``>=``, ``in`` (a list). Unknown fields are errors, so a
typo does not silently drop a label. Validation needs pydantic (``pip install 'moments-client[eval]'``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from moments_client._common import check_video_id

__all__ = ["EvalSet", "EvalSetError", "Filters", "Query", "Range", "VideoEntry", "load_set"]

Scalar = str | float | bool
Operator = Literal["==", "!=", "<", "<=", ">", ">=", "in"]


class EvalSetError(ValueError):
    """The labelled set cannot be read or is not valid; the message says where."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Range(_Strict):
    video_id: str = Field(min_length=1)
    start_s: float = Field(ge=0, allow_inf_nan=False)
    end_s: float = Field(allow_inf_nan=False)

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.end_s <= self.start_s:
            raise ValueError(f"end_s ({self.end_s:g}) must be after start_s ({self.start_s:g})")
        return self


class VideoEntry(_Strict):
    id: str
    path: str | None = None
    metadata: dict[str, Scalar] = Field(default_factory=dict)

    @field_validator("id")
    @classmethod
    def _video_id(cls, video_id: str) -> str:
        check_video_id(video_id)  # --ingest stores the video under this id
        return video_id


class Filters(_Strict):
    video_ids: list[str] | None = None
    where: dict[str, Scalar | dict[Operator, Scalar | list[Scalar]]] = Field(default_factory=dict)
    start_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    end_s: float | None = Field(default=None, allow_inf_nan=False)

    def conditions(self) -> list[tuple[str, str, Any]]:
        """``where`` as the client's ``[(key, op, value), ...]``."""
        out: list[tuple[str, str, Any]] = []
        for key, spec in self.where.items():
            if isinstance(spec, dict):
                out.extend((key, op, value) for op, value in spec.items())
            else:
                out.append((key, "==", spec))
        return out


class Query(_Strict):
    id: str = Field(min_length=1)
    text: str | None = Field(default=None, min_length=1)
    image: str | None = Field(default=None, min_length=1)
    filters: Filters = Field(default_factory=Filters)
    relevant: list[Range] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Query:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of 'text' and 'image'")
        return self

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "image"


class EvalSet(_Strict):
    name: str = ""
    videos: list[VideoEntry] = Field(min_length=1)
    queries: list[Query] = Field(min_length=1)
    #: the folder that relative paths are resolved against (the file's folder); not part of the format
    base: Path = Field(default=Path("."), exclude=True)

    @field_validator("videos")
    @classmethod
    def _unique_videos(cls, videos: list[VideoEntry]) -> list[VideoEntry]:
        _no_duplicates([v.id for v in videos], "video")
        return videos

    @field_validator("queries")
    @classmethod
    def _unique_queries(cls, queries: list[Query]) -> list[Query]:
        _no_duplicates([q.id for q in queries], "query")
        return queries

    @model_validator(mode="after")
    def _known_videos(self) -> EvalSet:
        ids = {v.id for v in self.videos}
        for i, q in enumerate(self.queries):
            for j, r in enumerate(q.relevant):
                if r.video_id not in ids:
                    raise ValueError(f"queries[{i}] ({q.id!r}).relevant[{j}]: video {r.video_id!r} is not in 'videos'")
        return self

    def video_path(self, video: VideoEntry) -> Path | None:
        return None if video.path is None else self.base / video.path

    def image_path(self, query: Query) -> Path:
        assert query.image is not None
        return self.base / query.image

    def image_bytes(self, query: Query) -> bytes:
        path = self.image_path(query)
        try:
            return path.read_bytes()
        except OSError as e:
            raise EvalSetError(f"query {query.id!r}: cannot read image {path}: {e.strerror or e}") from None


def _no_duplicates(ids: list[str], what: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise ValueError(f"{what} id {i!r} is used twice")
        seen.add(i)


def _where(loc: tuple[int | str, ...], raw: dict[str, Any]) -> str:
    """A pydantic error location as ``queries[3] (id 'q4').relevant[0].end_s``."""
    out = ""
    for n, part in enumerate(loc):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        if n == 1 and isinstance(part, int) and loc[0] in ("queries", "videos"):
            items = raw.get(str(loc[0]))
            item = items[part] if isinstance(items, list) and part < len(items) else None
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                out += f" (id {item['id']!r})"
    return out


def load_set(path: str | Path) -> EvalSet:
    """Read and validate a labelled set; :class:`EvalSetError` names the file, the field and the problem.

    Image files of image queries must exist (video files are checked by ``--ingest``, which needs them)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise EvalSetError(f"cannot read {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EvalSetError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise EvalSetError(f"{path}: expected a JSON object with 'videos' and 'queries'")
    try:
        labelled = EvalSet.model_validate({**raw, "base": path.parent})
    except ValidationError as e:
        problems = []
        for err in e.errors()[:10]:
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{_where(err['loc'], raw)}: {msg}" if err["loc"] else msg)
        more = f" (and {e.error_count() - 10} more)" if e.error_count() > 10 else ""
        raise EvalSetError(f"{path}: " + "; ".join(problems) + more) from None
    missing = [q for q in labelled.queries if q.image is not None and not labelled.image_path(q).is_file()]
    if missing:
        names = ", ".join(f"{q.id!r} ({labelled.image_path(q)})" for q in missing[:5])
        raise EvalSetError(f"{path}: image file(s) of {len(missing)} query(ies) not found: {names}")
    return labelled
