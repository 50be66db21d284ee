"""The core alone, without gRPC: built from Settings (core.py) and called with its own types, as the
transport calls it. A real shapes-demo model, a real embedded store, a real video decoded by PyAV."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

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
