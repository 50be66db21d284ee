"""Every call of the Moments API written once: its parameters and documentation, how its request is built and how
its answer is read. :class:`moments_client.Client` and :class:`moments_client.AsyncClient` make their methods
from these (:func:`moments_client._common.method_of`), the one blocking, the other awaitable, with the same
signatures and behaviour.

A unary call is a :class:`Unary` (method name, request, reader of the answer); an Ingest call is a
:class:`moments_client._streams.Stream`, or a :class:`moments_client._streams.Blocking` for the forms that wait
for the end. Nothing here touches the network.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from moments.v1 import moments_pb2 as pb
from moments_client import _common as c
from moments_client._streams import Blocking, FramesStream, ProgressCallback, PullStream, Stream, UploadStream
from moments_client.types import Embeddings, Info, SearchResult, Video, VideoPage, Where
from moments_client.values import conditions

T = TypeVar("T")


@dataclass(frozen=True)
class Unary(Generic[T]):
    method: str
    request: Any
    read: Callable[[Any], T]
    timeout: float | None


# ------------------------------------------------------------------------------------------------ unary calls


def search(
    text: str | None = None,
    image: bytes | str | os.PathLike[str] | None = None,
    top_k: int = 10,
    *,
    video_ids: Sequence[str] | str | None = None,
    start_s: float | None = None,
    end_s: float | None = None,
    where: Where | None = None,
    merge_adjacent: bool = False,
    group_by_video: bool = False,
    include_thumbnails: bool = False,
    min_score: float | None = None,
    merge_tolerance: float | None = None,
    page_token: str | None = None,
    complete_only: bool = False,
    image_weight: float | None = None,
    parts: Sequence[tuple[str | bytes | os.PathLike[str], float]] | None = None,
    any_texts: Sequence[str] = (),
    negative_texts: Sequence[str] = (),
    max_per_video: int = 0,
    relative_score: float | None = None,
    negative_weight: float | None = None,
    negative_margin: float | None = None,
    timeout: float | None = None,
) -> Unary[SearchResult]:
    """The moments that best match ``text`` or ``image`` (JPEG/PNG bytes or a path), best first.

    ``merge_adjacent`` joins a video's hits whose sampling windows touch into one moment, while each frame
    scores within ``merge_tolerance`` (server default 0.05) of the moment's best; ``group_by_video`` keeps
    each video's best moment only.

    ``where`` filters on the videos' metadata: ``{"camera": "north", "floor": (">=", 2),
    "site": ["a", "b"]}`` or ``[("floor", ">=", 1), ("floor", "<", 3)]``.

    Composed queries (every score is built from cosine similarities of L2-normalised vectors, see the
    proto's SearchRequest): ``text`` and ``image`` together search for their weighted sum, the image
    weighing ``image_weight`` (default 0.5) and the text the rest; ``parts=[("a red circle", 1.0),
    (Path("q.png"), 0.5)]`` is the general form (a ``str`` is a text, bytes or a path an image).
    ``any_texts`` are alternatives (a frame scores its best match), ``negative_texts`` push down the
    frames close to them (``negative_weight``, default 1, ``negative_margin``, default 0).
    ``max_per_video`` bounds each video's moments in the results (0 = no limit); ``relative_score``
    keeps the hits within that distance of the best one.
    """
    if parts and (text is not None or image is not None):
        raise ValueError("parts= is the general form of text= and image=: give one or the other")
    if text is not None and image is not None:  # their weighted mix: the general form with two parts
        w = 0.5 if image_weight is None else image_weight
        if not 0.0 < w < 1.0:
            raise ValueError(f"image_weight is the image's share of the query, between 0 and 1 (not {w})")
        parts = [(text, 1.0 - w), (c.read_image(image), w)]
        text = image = None
    elif image_weight is not None:
        raise ValueError("image_weight= weighs an image against a text: give both text= and image=")
    if text is None and image is None and not parts and not any_texts:
        raise ValueError("search needs text=, image=, parts= or any_texts=")
    if max_per_video < 0:
        raise ValueError(f"max_per_video is a count of moments per video (0 = no limit), not {max_per_video}")
    # None leaves an optional field unset: the server's default applies
    request = pb.SearchRequest(
        text=text,
        image=None if image is None else c.read_image(image),
        parts=[
            pb.QueryPart(text=what, weight=weight)
            if isinstance(what, str)
            else pb.QueryPart(image=c.read_image(what), weight=weight)
            for what, weight in parts or ()
        ],
        any_texts=any_texts,
        negative_texts=negative_texts,
        top_k=top_k,
        filters=pb.SearchFilters(
            video_ids=[video_ids] if isinstance(video_ids, str) else video_ids or [],
            start_s=start_s,
            end_s=end_s,
            conditions=conditions(where),
            complete_only=complete_only,
        ),
        options=pb.SearchOptions(
            merge_adjacent=merge_adjacent,
            group_by_video=group_by_video,
            include_thumbnails=include_thumbnails,
            min_score=min_score,
            merge_tolerance=merge_tolerance,
            max_per_video=max_per_video,
            relative_score=relative_score,
            negative_weight=negative_weight,
            negative_margin=negative_margin,
        ),
        page_token=page_token or "",
    )
    return Unary("Search", request, SearchResult.from_proto, timeout)


def embed(
    texts: Sequence[str] | None = None,
    images: Sequence[bytes | str | os.PathLike[str]] | None = None,
    *,
    timeout: float | None = None,
) -> Unary[Embeddings]:
    """The model's L2-normalised vectors for texts or for images (one kind per call)."""
    return Unary("Embed", c.embed_request(texts, images), Embeddings.from_proto, timeout)


def get_video(video_id: str, *, timeout: float | None = None) -> Unary[Video]:
    """One video's record; MomentsError(NOT_FOUND) when the id is unknown."""
    return Unary("GetVideo", pb.GetVideoRequest(video_id=video_id), Video.from_proto, timeout)


def _video_page(r: pb.ListVideosResponse) -> VideoPage:
    return VideoPage([Video.from_proto(v) for v in r.videos], r.next_page_token or None, r.trimmed)


def list_videos_page(
    page_size: int = 100, page_token: str | None = None, *, timeout: float | None = None
) -> Unary[VideoPage]:
    """One page of the stored videos in ingest order; ``next_page_token`` asks for the next."""
    request = pb.ListVideosRequest(page_size=page_size, page_token=page_token or "")
    return Unary("ListVideos", request, _video_page, timeout)


def delete_video(video_id: str, *, timeout: float | None = None) -> Unary[int]:
    """Delete a video with its clips, frame embeddings and thumbnails; returns the frames removed."""
    return Unary("DeleteVideo", pb.DeleteVideoRequest(video_id=video_id), lambda r: int(r.frames_deleted), timeout)


def info(*, timeout: float | None = None) -> Unary[Info]:
    """The serving model, descriptor set, store kind and limits."""
    return Unary("Info", pb.InfoRequest(), Info.from_proto, timeout)


def stop_ingest(video_id: str, *, timeout: float | None = None) -> Unary[Video | None]:
    """End the running live ingest (a pull or a stream) of ``video_id`` cleanly: the video becomes
    "complete"; returns it once its ingest has ended (None when nothing had been committed).
    MomentsError(NOT_FOUND) when no ingest of that id runs."""

    def read(r: pb.StopIngestResponse) -> Video | None:
        return Video.from_proto(r.video) if r.HasField("video") else None

    return Unary("StopIngest", pb.StopIngestRequest(video_id=video_id), read, timeout)


# ------------------------------------------------------------------------------------------------ ingest


def ingest_events(
    source: c.AsyncSource,
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    fps: float = 1.0,
    max_frames: int = 0,
    keyframes: bool = False,
    live: bool = False,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    sha256: str | bool | None = None,
    filename: str | None = None,
    chunk_size: int = c.CHUNK_SIZE,
    timeout: float | None = None,
    resume_retries: int = 5,
) -> Stream:
    """Stream ``source`` (a path, bytes, a binary file or an iterator of bytes; with AsyncClient also an async
    iterable of bytes) as ``video_id``; yields :class:`IngestAccepted`, :class:`IngestProgress` events and
    finally :class:`IngestDone`.

    The file is opened before the call (an unreadable path raises OSError). Closing the iterator early
    cancels the upload, which leaves nothing of the video on the server. ``keyframes=True`` keeps only
    keyframes (``SamplingOptions.keyframes``: far less decoding, frames as far apart as keyframes).
    ``sha256=True`` hashes a seekable source first so that the server verifies the upload.
    ``live=True`` sends a stream that may never end (INGEST_MODE_LIVE): the server commits it every
    ``segment_s`` seconds of video, reported as :class:`IngestCommitted` events, searchable at once; such a
    call has no deadline unless ``timeout`` is given. A live upload resumes itself when its link breaks
    (UNAVAILABLE and the like, a server restart): after a backoff (0.5 s doubling to 8 s, at most
    ``resume_retries`` tries in a row; 0 turns it off) it calls again with the upload id and the offset the
    server reported committed and sends the bytes from there, so each byte is stored once; the events go on
    with a new :class:`IngestAccepted` (its ``offset``). AsyncClient reads files in a worker thread, so the
    event loop never blocks on disk.
    """

    def header(name: str, digest: str | None, size: int | None) -> pb.IngestHeader:
        return c.ingest_header(
            video_id,
            name,
            metadata,
            fps,
            max_frames,
            replace,
            thumbnails,
            digest,
            size,
            keyframes=keyframes,
            live=live,
            segment_s=segment_s,
        )

    return UploadStream(source, filename, sha256, chunk_size, header, video_id, timeout, live, resume_retries)


def ingest(
    source: c.AsyncSource,
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    fps: float = 1.0,
    max_frames: int = 0,
    keyframes: bool = False,
    live: bool = False,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    sha256: str | bool | None = None,
    filename: str | None = None,
    chunk_size: int = c.CHUNK_SIZE,
    timeout: float | None = None,
    resume_retries: int = 5,
    on_progress: ProgressCallback | None = None,
) -> Blocking:
    """Like :meth:`ingest_events`, but blocks until the video is stored and returns the summary;
    ``on_progress`` (if given) receives every event as it arrives."""
    stream = ingest_events(
        source,
        video_id,
        metadata,
        fps=fps,
        max_frames=max_frames,
        keyframes=keyframes,
        live=live,
        segment_s=segment_s,
        replace=replace,
        thumbnails=thumbnails,
        sha256=sha256,
        filename=filename,
        chunk_size=chunk_size,
        timeout=timeout,
        resume_retries=resume_retries,
    )
    return Blocking(stream, on_progress)


def ingest_frames_events(
    frames: Iterable[c.FrameItem] | AsyncIterable[c.FrameItem],
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    filename: str = "",
    resume_upload_id: str | None = None,
    resume_offset: int = 0,
    timeout: float | None = None,
    resume_retries: int = 5,
) -> Stream:
    """Stream pictures sampled by the caller (INGEST_MODE_FRAMES): ``frames`` yields :class:`Frame` or
    ``(jpeg_or_png_bytes, time_s)`` with strictly increasing times, each standing for the time until the
    next one; the iterator may never end (with AsyncClient it may be an async iterable). The server commits
    every ``segment_s`` seconds (reported as :class:`IngestCommitted`, searchable at once; ``frames`` is the
    count committed). After a break, resume with ``resume_upload_id`` (:attr:`IngestAccepted.upload_id`) and
    ``resume_offset`` = frames committed, sending the frames from that one on; a broken link does this by
    itself (``resume_retries`` tries in a row, as :meth:`ingest_events` with ``live=True``; the client keeps
    the frames sent since the last commit). No deadline unless ``timeout`` is given."""

    def header() -> pb.IngestHeader:
        return c.frames_header(
            video_id, filename, metadata, segment_s, replace, thumbnails, resume_upload_id, resume_offset
        )

    return FramesStream(frames, header, video_id, timeout, resume_retries)


def ingest_frames(
    frames: Iterable[c.FrameItem] | AsyncIterable[c.FrameItem],
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    filename: str = "",
    resume_upload_id: str | None = None,
    resume_offset: int = 0,
    timeout: float | None = None,
    resume_retries: int = 5,
    on_progress: ProgressCallback | None = None,
) -> Blocking:
    """Like :meth:`ingest_frames_events`, but blocks until the stream ends and returns the summary;
    ``on_progress`` (if given) receives every event as it arrives."""
    stream = ingest_frames_events(
        frames,
        video_id,
        metadata,
        segment_s=segment_s,
        replace=replace,
        thumbnails=thumbnails,
        filename=filename,
        resume_upload_id=resume_upload_id,
        resume_offset=resume_offset,
        timeout=timeout,
        resume_retries=resume_retries,
    )
    return Blocking(stream, on_progress)


def ingest_url_events(
    url: str,
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    fps: float = 1.0,
    keyframes: bool = False,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    timeout: float | None = None,
) -> Stream:
    """Have the server pull ``url`` (``rtsp://``, ``rtsps://``, ``http(s)://`` e.g. an HLS playlist,
    ``udp://`` MPEG-TS) as the live video ``video_id``; yields :class:`IngestAccepted`, :class:`IngestPull`
    (what the server has read, reconnects), :class:`IngestCommitted` and finally :class:`IngestDone`.

    The server reconnects when the source breaks and ends the video "complete" when the source ends, on
    :meth:`stop_ingest`, or when this iterator is closed early (which cancels the call); no deadline
    unless ``timeout`` is given."""

    def header() -> pb.IngestHeader:
        return c.pull_header(url, video_id, metadata, fps, segment_s, replace, thumbnails, keyframes)

    return PullStream(header, video_id, timeout)


def ingest_url(
    url: str,
    video_id: str,
    metadata: Mapping[str, Any] | None = None,
    *,
    fps: float = 1.0,
    keyframes: bool = False,
    segment_s: float = 0.0,
    replace: bool = False,
    thumbnails: bool = False,
    timeout: float | None = None,
    on_progress: ProgressCallback | None = None,
) -> Blocking:
    """Like :meth:`ingest_url_events`, but blocks until the pull ends and returns the summary;
    ``on_progress`` (if given) receives every event as it arrives."""
    stream = ingest_url_events(
        url,
        video_id,
        metadata,
        fps=fps,
        keyframes=keyframes,
        segment_s=segment_s,
        replace=replace,
        thumbnails=thumbnails,
        timeout=timeout,
    )
    return Blocking(stream, on_progress)
