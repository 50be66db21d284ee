"""The core alone, without gRPC: built from Settings (core.py) and called with its own types, as the
transport calls it. A real shapes-demo model, a real embedded store, a real video decoded by PyAV."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import FrameType

import pytest

from moments_client.sample_video import write_shapes_video
from moments_server.config import Settings
from moments_server.core import open_core
from moments_server.errors import AlreadyExists, InvalidArgument, NotFound
from moments_server.service import events
from moments_server.service.requests import Condition, Filters, IngestSpec, Op, Sampling, SearchQuery

SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle")]


async def chunks(data: bytes, size: int = 32 * 1024) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def core_settings(model_dir: Path, workdir: Path, **more: object) -> Settings:
    return Settings(
        model_dir=model_dir,
        store=f"embedded:{workdir / 'data'}",
        spool_dir=workdir / "spool",
        autotune_batches=False,
        metrics_listen="127.0.0.1:0",
        **more,  # type: ignore[arg-type]
    )


def test_the_core_ingests_and_searches_without_a_transport(shapes_model_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "cam.mp4"
    segments = write_shapes_video(video, SHAPES, seconds_each=2.0, fps=10, size=(128, 128))
    data = video.read_bytes()
    settings = core_settings(shapes_model_dir, tmp_path)

    async def run() -> None:
        core = await open_core(settings)
        try:
            await core.prepare()
            seen: list[events.IngestEvent] = []

            async def emit(event: events.IngestEvent) -> None:
                seen.append(event)

            spec = IngestSpec("cam", "cam.mp4", {"floor": 2.0}, sampling=Sampling(fps=2), size_bytes=len(data))
            await core.ingest.ingest(spec, chunks(data), emit)
            assert isinstance(seen[0], events.Accepted) and not seen[0].replacing
            done = seen[-1]
            assert isinstance(done, events.Done) and done.frames == 12 and done.video.metadata == {"floor": 2.0}
            assert done.video.shots == len(SHAPES)  # windows follow shots by default
            with pytest.raises(AlreadyExists, match=r"set IngestHeader\.replace"):
                await core.ingest.ingest(spec, chunks(data), emit)

            for (color, shape), (start, end) in zip(SHAPES, [(s.start_s, s.end_s) for s in segments], strict=True):
                page = await core.search.search(SearchQuery(text=f"a {color} {shape}", top_k=3), None)
                best = page.moments[0]
                assert best.video_id == "cam" and start <= best.best_frame_s < end, (shape, best)
                assert best.metadata == {"floor": 2.0} and page.timing.total_ms > 0

            # filters in the core's types: a condition no stored frame meets finds nothing
            where = Filters(conditions=[Condition("floor", Op.GT, [2.0])])
            assert (await core.search.search(SearchQuery(text="a red circle", filters=where), None)).moments == []
            with pytest.raises(InvalidArgument, match="no stored video has metadata key 'flor'"):
                typo = Filters(conditions=[Condition("flor", Op.EQ, [2.0])])
                await core.search.search(SearchQuery(text="a red circle", filters=typo), None)

            # paging: the second page goes on where the first stopped
            first = await core.search.search(SearchQuery(text="a blue square", top_k=4), None)
            assert first.more
            second = await core.search.search(
                SearchQuery(text="a blue square", top_k=4, page_token=first.token_after(4)), None
            )
            firsts = {(m.video_id, m.best_frame_s) for m in first.moments}
            assert second.offset == 4 and not firsts & {(m.video_id, m.best_frame_s) for m in second.moments}

            listed = await core.videos.list(0, "")
            assert [v.video_id for v in listed.videos] == ["cam"] and not listed.more
            assert await core.videos.delete("cam") == 12
            with pytest.raises(NotFound):
                await core.videos.get("cam")
        finally:
            await core.close()

    asyncio.run(run())


def test_shot_settings_reach_the_detector(shapes_model_dir: Path, tmp_path: Path) -> None:
    """shot_min_s longer than the video: no cut is one, the upload is one shot."""
    video = tmp_path / "cam.mp4"
    write_shapes_video(video, SHAPES, seconds_each=2.0, fps=10, size=(128, 128))

    async def run() -> int:
        core = await open_core(core_settings(shapes_model_dir, tmp_path, shot_min_s=60.0))
        try:
            await core.prepare()
            seen: list[events.IngestEvent] = []

            async def emit(event: events.IngestEvent) -> None:
                seen.append(event)

            await core.ingest.ingest(IngestSpec("cam", "cam.mp4"), chunks(video.read_bytes()), emit)
            done = seen[-1]
            assert isinstance(done, events.Done)
            return done.video.shots
        finally:
            await core.close()

    assert asyncio.run(run()) == 1


def producer_threads() -> list[str]:
    """Names of the threads now running an upload's decode (UploadIngest's `produce` on their stack)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in sys._current_frames().items():
        f: FrameType | None = frame
        while f is not None and not (f.f_code.co_name == "produce" and f.f_code.co_filename.endswith("upload.py")):
            f = f.f_back
        if f is not None:
            out.append(names.get(ident, "?"))
    return out


def test_upload_decoders_hold_threads_of_their_own(shapes_model_dir: Path, tmp_path: Path) -> None:
    """An upload's decoder holds a thread for the video's whole decode. With as many uploads as store threads,
    decoders on the store's threads would leave no thread for a search's store query until a decode ended:
    they run on threads of their own, and a search is answered while both decode."""
    video = tmp_path / "long.mp4"
    write_shapes_video(video, SHAPES * 20, seconds_each=5.0, fps=5, size=(96, 96))  # 300 s: 300 frames at 1 fps
    data = video.read_bytes()
    settings = core_settings(shapes_model_dir, tmp_path, store_threads=2, max_concurrent_ingests=2)

    async def run() -> tuple[list[str], list[bool]]:
        core = await open_core(settings)
        try:
            await core.prepare()
            done: dict[str, bool] = {}

            def emitter(vid: str) -> Callable[[events.IngestEvent], Awaitable[None]]:
                async def emit(event: events.IngestEvent) -> None:
                    done[vid] = isinstance(event, events.Done)

                return emit

            uploads = [
                asyncio.ensure_future(core.ingest.ingest(IngestSpec(v, "long.mp4"), chunks(data), emitter(v)))
                for v in ("a", "b")
            ]
            threads: list[str] = []
            while len(threads) < 2:  # both uploads decoding
                await asyncio.sleep(0.002)
                threads = producer_threads()
            await core.search.search(SearchQuery(text="a red circle", top_k=3), None)
            answered_while = [done.get(v, False) for v in ("a", "b")]
            await asyncio.gather(*uploads)
            return threads, answered_while
        finally:
            await core.close()

    threads, done_at_search = asyncio.run(run())
    assert len(threads) == 2 and all(name.startswith("decode") for name in threads), threads
    assert done_at_search == [False, False]  # the search came back while both uploads were still running
