"""UPLOAD ingest: spool the streamed bytes, decode and sample them in a thread, embed the frames through the
ingest lane, then write the video, its clips and frame descriptors in one store transaction.

Nothing is written before the last step, so a failed, cancelled or disconnected upload leaves nothing
visible, and a replace swaps the old video for the new one atomically.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import Executor
from itertools import pairwise
from pathlib import Path

import numpy as np

from moments_server import metrics
from moments_server.bridge import ThreadIterator
from moments_server.catalog.catalog import Catalog
from moments_server.catalog.model import FrameRecord, PropertyValue, VideoRecord, now_date
from moments_server.config import Settings
from moments_server.errors import AlreadyExists, DataLoss, InvalidArgument, ResourceExhausted
from moments_server.inference.embedder import Embedder
from moments_server.service.events import Accepted, Done, Emit, Progress, Timings
from moments_server.service.ingest_checks import check_size, check_video, shot_windows, store_bound_note
from moments_server.service.requests import IngestSpec
from moments_server.store.file_blob import FileBlob
from moments_server.video.decode import DecodeStats, SampledFrame, VideoInfo, probe, sample
from moments_server.video.shots import ShotDetector
from moments_server.video.spool import Spool, UploadTooLarge
from moments_server.video.thumbnails import thumbnail

log = logging.getLogger(__name__)


def close_shots(records: list[FrameRecord]) -> int:
    """Each shot ends where the next starts, the last one with the last frame's window; -> shots found."""
    starts: dict[int, float] = {}
    for r in records:
        if r.shot is not None and r.shot_start_s is not None:
            starts.setdefault(r.shot, r.shot_start_s)
    if not starts:
        return 0
    order = sorted(starts)
    ends = {shot: starts[after] for shot, after in pairwise(order)}
    ends[order[-1]] = max(r.end_s for r in records if r.shot == order[-1])
    for r in records:
        if r.shot is not None:
            r.shot_end_s = ends[r.shot]
    return len(starts)


class UploadIngest:
    def __init__(
        self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor, decoders: Executor
    ) -> None:
        """executor: store calls; decoders: the threads a video's decode holds while it runs."""
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor
        self.decoders = decoders

    async def run(
        self, header: IngestSpec, metadata: dict[str, PropertyValue], chunks: AsyncIterator[bytes], emit: Emit
    ) -> None:
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        existing = await loop.run_in_executor(self.executor, self.catalog.get_video, header.video_id)
        if existing is not None and not header.replace:
            raise AlreadyExists(
                f"video {header.video_id!r} exists; set IngestHeader.replace (CLI: --replace) to overwrite it"
            )
        await emit(Accepted(header.video_id, replacing=existing is not None))

        progress = Progress()
        suffix = Path(header.filename).suffix[:16] if header.filename else ""
        limit = self.settings.max_stored_video_bytes
        spool = Spool(self.settings.spool_dir, limit, suffix)
        try:
            last = time.perf_counter()
            async for chunk in chunks:
                try:
                    spool.write(chunk)
                except UploadTooLarge as e:
                    raise ResourceExhausted(str(e) + store_bound_note(self.settings)) from e
                check_size(header, spool.size, finished=False)
                metrics.INGEST_BYTES.inc(len(chunk))
                progress.bytes_received = spool.size
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(progress)
            digest = spool.finish()
            received = time.perf_counter()
            if spool.size == 0:
                raise InvalidArgument("the upload is empty: send the video's bytes as chunks after the header")
            check_size(header, spool.size, finished=True)
            if header.sha256 and header.sha256 != digest:
                raise DataLoss(f"the upload's sha256 is {digest}, the header says {header.sha256}; resend the video")
            await emit(progress)
            info = await loop.run_in_executor(self.executor, probe, spool.path)
            check_video(info, self.settings)
            frames, vectors, thumbs, decode_s, embed_s = await self._embed_video(header, spool.path, progress, emit)
            if not frames:
                raise InvalidArgument("no frame could be sampled from the video")
            record = self._record(header, metadata, info, spool.size, digest, frames)
            record.shots = close_shots(frames)
            # the video's blob is the spool file: the in-process store copies it file to file; a remote one
            # reads it into its one message (bounded by max_stored_video_bytes, checked as the bytes arrived)
            blob = FileBlob(spool.path, spool.size)
            store_started = time.perf_counter()
            await loop.run_in_executor(
                self.executor,
                lambda: self.catalog.add_video(record, blob, frames, vectors, thumbs, replace=existing is not None),
            )
            done = time.perf_counter()
        finally:
            spool.discard()
        progress.frames_stored = len(frames)
        metrics.INGEST_FRAMES.labels("stored").inc(len(frames))
        timings = Timings(
            receive_s=received - t0, decode_s=decode_s, embed_s=embed_s, store_s=done - store_started, total_s=done - t0
        )
        await emit(progress)
        await emit(Done(record, len(frames), timings))
        log.info(
            "ingested %s: %d frames, %.1f s of video in %.2f s",
            header.video_id,
            len(frames),
            info.duration_s,
            done - t0,
        )

    def _record(
        self,
        header: IngestSpec,
        metadata: dict[str, PropertyValue],
        info: VideoInfo,
        size: int,
        digest: str,
        frames: list[FrameRecord],
    ) -> VideoRecord:
        duration = info.duration_s or (frames[-1].end_s if frames else 0.0)
        return VideoRecord(
            video_id=header.video_id,
            filename=header.filename,
            duration_s=duration,
            fps=info.fps,
            width=info.width,
            height=info.height,
            codec=info.codec,
            container=info.container,
            ingested_at=now_date(),
            frames=len(frames),
            size_bytes=size,
            sha256=digest,
            metadata=metadata,
        )

    async def _embed_video(
        self, header: IngestSpec, path: Path, progress: Progress, emit: Emit
    ) -> tuple[list[FrameRecord], np.ndarray, list[bytes] | None, float, float]:
        """Decode in a thread, embed as frames arrive (the Embedder's stream bounds what is in flight), report
        progress."""
        fps = header.sampling.fps or 1.0
        max_frames = header.sampling.max_frames or self.settings.max_frames
        decoded = [0]
        decode_s = [0.0]
        want_thumbs = header.thumbnails
        s = self.settings
        shots = shot_windows(header, s)
        detector = ShotDetector(s.shot_threshold, s.shot_min_s, s.shot_width, s.shot_color_change) if shots else None
        stats = DecodeStats()

        def on_decoded(n: int) -> None:
            decoded[0] = n

        def produce(should_stop: Callable[[], bool]) -> Iterator[tuple[tuple[SampledFrame, bytes | None], np.ndarray]]:
            started = time.perf_counter()
            sampled = sample(
                path,
                fps,
                max_frames,
                self.embedder.framing,
                on_decoded,
                should_stop,
                keyframes=header.sampling.keyframes,
                stats=stats,
                shots=detector,
                detect_fps=self.settings.shot_detect_fps,
            )
            for frame in sampled:
                thumb = thumbnail(frame.rgb) if want_thumbs else None
                decode_s[0] = time.perf_counter() - started
                yield (frame, thumb), frame.rgb
            decode_s[0] = time.perf_counter() - started

        decoder = ThreadIterator(self.decoders, produce, maxsize=2 * self.embedder.image_max_batch)
        records: list[FrameRecord] = []
        thumbs: list[bytes] = []
        results: list[np.ndarray] = []
        embed_s = 0.0
        last = time.perf_counter()
        stream = self.embedder.embed_stream(decoder)
        try:
            async for done in stream:
                frame, thumb = done.key
                shot = (frame.shot, frame.shot_start_s) if frame.shot >= 0 else (None, None)
                records.append(FrameRecord(frame.time_s, frame.start_s, frame.end_s, *shot))
                if thumb is not None:
                    thumbs.append(thumb)
                results.append(done.vector)
                embed_s += done.inference_s
                progress.frames_decoded = max(decoded[0], len(records))
                progress.frames_embedded = len(results)
                if time.perf_counter() - last >= self.settings.progress_every_s:
                    last = time.perf_counter()
                    await emit(progress)
        finally:
            await stream.aclose()
            await decoder.aclose()
        progress.frames_decoded = max(decoded[0], len(records))
        progress.frames_embedded = len(results)
        metrics.INGEST_FRAMES.labels("decoded").inc(progress.frames_decoded)
        metrics.INGEST_FRAMES.labels("embedded").inc(len(results))
        if shots:
            log.info(
                "%s: %d shots, detection %.3f s CPU over %d decoded frames",
                header.video_id,
                stats.cuts + 1,
                stats.detect_s,
                stats.decoded,
            )
        vectors = np.stack(results) if results else np.zeros((0, self.embedder.dim), np.float32)
        return records, vectors, (thumbs if want_thumbs else None), decode_s[0], embed_s
