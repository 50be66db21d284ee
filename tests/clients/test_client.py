"""moments_client.Client and AsyncClient against the live server (shapes-demo)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from moments_client import (
    AsyncClient,
    Client,
    IngestAccepted,
    IngestDone,
    IngestEvent,
    IngestProgress,
    MomentsError,
)
from moments_client.shapes import draw
from tests.clients.conftest import TOKEN, Library, Videos
from tests.live import LiveServer


@pytest.fixture(scope="module")
def client(server: LiveServer) -> Iterator[Client]:
    with Client(server.target, token=TOKEN) as c:
        yield c


def test_info(client: Client) -> None:
    info = client.info()
    assert info.model.name == "shapes-demo"
    assert info.model.dimensions > 0 and info.limits.max_top_k >= 10
    assert info.store == "embedded"
    m = info.model
    assert m.provider == "CPUExecutionProvider" and not m.fused and not m.cuda_graphs
    assert isinstance(m.text_buckets, tuple) and m.text_buckets[0] == 1
    assert m.text_buckets[-1] == info.limits.text_max_batch and m.image_buckets[-1] == info.limits.image_max_batch
    assert info.to_json()["model"]["image_buckets"] == list(m.image_buckets)


@pytest.fixture(scope="module")
def py_path(client: Client, videos: Videos) -> tuple[Path, IngestDone, list[IngestEvent]]:
    """clip-north.mp4 ingested by path as `py-path`, at 2 fps, with typed metadata; its events."""
    path = videos.folder / "clip-north.mp4"
    events: list[IngestEvent] = []
    done = client.ingest(path, "py-path", {"camera": "py", "floor": 7, "ok": True}, fps=2.0, on_progress=events.append)
    return path, done, events


def test_ingest_path_reports_progress_and_is_searchable(client: Client, py_path: tuple) -> None:
    path, done, events = py_path
    assert isinstance(events[0], IngestAccepted) and not events[0].replacing
    progress = [e for e in events if isinstance(e, IngestProgress)]
    assert progress and progress[-1].bytes_received == path.stat().st_size
    assert progress[-1].bytes_sent == progress[-1].total_bytes == path.stat().st_size
    assert events[-1] is done and isinstance(done, IngestDone)
    assert done.video.video_id == "py-path" and done.video.filename == "clip-north.mp4"
    assert done.frames == 8  # 4 s at 2 fps
    assert done.video.metadata == {"camera": "py", "floor": 7.0, "ok": True}

    result = client.search("a red circle", top_k=3, video_ids=["py-path"])
    assert result[0].video_id == "py-path" and result[0].best_frame_s < 2.0
    assert result.timing.total_ms > 0
    assert client.get_video("py-path").frames == 8


def test_ingest_bytes_iterator_and_file_object(client: Client, videos: Videos) -> None:
    data = (videos.folder / "south" / "clip-south.mp4").read_bytes()

    def pieces() -> Iterator[bytes]:  # odd sizes: the client re-chunks
        for i in range(0, len(data), 100_000):
            yield data[i : i + 100_000]

    done = client.ingest(pieces(), "py-iter", filename="clip-south.mp4")
    assert done.frames == 4
    done = client.ingest(io.BytesIO(data), "py-file", sha256=True)
    assert done.video.size_bytes == len(data)
    for vid in ("py-iter", "py-file"):
        (best,) = client.search("a red circle", top_k=1, video_ids=vid)
        assert best.video_id == vid and 2.0 <= best.best_frame_s < 4.0


def test_where_dict_merge_group(client: Client, library: Library, py_path: tuple) -> None:
    result = client.search("a red circle", top_k=10, where={"floor": (">=", 7), "camera": ["py", "x"]})
    assert result.moments and {m.video_id for m in result} == {"py-path"}
    grouped = client.search("a red circle", top_k=5, group_by_video=True, where=[("site", "==", "lab")])
    ids = [m.video_id for m in grouped]
    assert len(ids) == len(set(ids)) and set(ids[:2]) == {"clip-north", "clip-south"}
    # the red circle's frames (0 s, 1 s) score alike and merge; the blue square's do not join them
    (merged,) = client.search("a red circle", top_k=1, video_ids=["clip-north"], merge_adjacent=True)
    assert (merged.start_s, merged.end_s) == (0.0, 2.0) and merged.best_frame_s < 2.0
    # any tolerance joins frames of one shot only: the cut at 2 s ends the moment (shot-aware windows)
    (everything,) = client.search(
        "a red circle", top_k=1, video_ids="clip-north", merge_adjacent=True, merge_tolerance=2.0
    )
    assert (everything.start_s, everything.end_s) == (0.0, 2.0)


def test_errors_carry_the_status_code(client: Client, videos: Videos, py_path: tuple) -> None:
    with pytest.raises(MomentsError) as e:
        client.get_video("no-such-video")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and e.value.method == "GetVideo"
    assert "no-such-video" in e.value.message

    with pytest.raises(MomentsError) as e:
        client.ingest(videos.folder / "clip-north.mp4", "py-path")
    assert e.value.code == grpc.StatusCode.ALREADY_EXISTS

    with pytest.raises(MomentsError) as e:
        client.ingest(b"\x00" * 10_000, "py-garbage")
    assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT

    with pytest.raises(MomentsError) as e:
        client.ingest(videos.folder / "clip-north.mp4", "py-bad-sha", sha256=hashlib.sha256(b"x").hexdigest())
    assert e.value.code == grpc.StatusCode.DATA_LOSS

    with pytest.raises(MomentsError) as e:  # an ingest (receive, decode, embed, store) takes longer than 1 ms
        client.ingest(videos.folder / "clip-north.mp4", "py-deadline", timeout=0.001)
    assert e.value.code == grpc.StatusCode.DEADLINE_EXCEEDED

    with pytest.raises(FileNotFoundError):
        client.ingest(videos.folder / "missing.mp4", "py-missing")
    with pytest.raises(ValueError):
        client.ingest(b"x", "bad id with spaces")
    with pytest.raises(ValueError):
        client.search()


def test_wrong_token_is_unauthenticated(server: LiveServer) -> None:
    with Client(server.target, token="wrong") as c, pytest.raises(MomentsError) as e:
        c.info()
    assert e.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_replace_and_cancelled_ingest(client: Client, videos: Videos, py_path: tuple) -> None:
    path = videos.folder / "clip-north.mp4"
    events = list(client.ingest_events(path, "py-path", replace=True, metadata={"camera": "py", "floor": 7}))
    assert isinstance(events[0], IngestAccepted) and events[0].replacing

    stream = client.ingest_events(path, "py-cancelled", chunk_size=1024)
    first = next(stream)
    assert isinstance(first, IngestAccepted)
    stream.close()  # stops the upload: the server must keep nothing of it
    with pytest.raises(MomentsError) as e:
        client.get_video("py-cancelled")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_list_embed_delete(client: Client, library: Library) -> None:
    ids = [v.video_id for v in client.list_videos(page_size=1)]
    assert len(ids) == len(set(ids)) and {"clip-north", "clip-south", "clip-east"} <= set(ids)
    page = client.list_videos_page(page_size=2)
    assert len(page.videos) == 2 and page.next_page_token

    emb = client.embed(texts=["a red circle", "a blue square"])
    assert emb.vectors.shape == (2, emb.dimensions) and emb.vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb.vectors, axis=1), 1.0, atol=1e-3)

    client.ingest(library.videos.folder / "clip-north.mp4", "py-delete", fps=1.0)
    assert client.delete_video("py-delete") == 4
    with pytest.raises(MomentsError) as e:
        client.delete_video("py-delete")
    assert e.value.code == grpc.StatusCode.NOT_FOUND


def test_ingest_keyframes_only(client: Client, library: Library) -> None:
    # clip-north.mp4: 4 s written with x264's defaults (keyint 250): keyframes at 0 s and at the scene cut
    # (2 s, the red circle turns into a blue square)
    path = library.videos.folder / "clip-north.mp4"
    done = client.ingest(path, "py-keyframes", fps=2.0, keyframes=True)
    assert done.frames == 2
    by_time = client.ingest(path, "py-by-time", fps=2.0)
    assert by_time.frames == 8
    assert client.delete_video("py-keyframes") == 2 and client.delete_video("py-by-time") == 8


def test_async_client(server: LiveServer, library: Library) -> None:
    data = (library.videos.folder / "clip-north.mp4").read_bytes()

    async def pieces() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 300_000):
            yield data[i : i + 300_000]
            await asyncio.sleep(0)

    async def main() -> None:
        async with AsyncClient(server.target, token=TOKEN) as c:
            seen: list[IngestEvent] = []
            done = await c.ingest(pieces(), "py-async", {"camera": "async"}, on_progress=seen.append)
            assert done.frames == 4 and isinstance(seen[0], IngestAccepted)

            results = await asyncio.gather(
                c.search("a red circle", top_k=1, video_ids=["py-async"]),
                c.search("a blue square", top_k=1, video_ids=["py-async"]),
            )
            assert results[0][0].best_frame_s < 2.0 <= results[1][0].best_frame_s
            assert (await c.info()).model.name == "shapes-demo"
            assert "py-async" in [v.video_id async for v in c.list_videos(page_size=2)]
            with pytest.raises(MomentsError) as e:
                await c.get_video("no-such-video")
            assert e.value.code == grpc.StatusCode.NOT_FOUND
            assert await c.delete_video("py-async") == 4

    asyncio.run(main())


def test_file_source_is_opened_before_the_call(client: Client, tmp_path: Path) -> None:
    folder = tmp_path / "a-folder.mp4"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        client.ingest(folder, "py-folder")


FOLDER_IDS = ["clip-north", "clip-south", "clip-east"]


def _shown(videos: Videos, video_id: str, second: float) -> str:
    return next(s.caption for s in videos.schedule[video_id] if s.start_s - 0.01 <= second < s.end_s - 0.01)


def test_composed_search(client: Client, library: Library, tmp_path: Path) -> None:
    picture = tmp_path / "green-triangle.png"
    Image.fromarray(draw("green", "triangle", 128, rng=7)).save(picture)

    def shown(result: object) -> list[str]:
        return [_shown(library.videos, m.video_id, m.best_frame_s) for m in result]  # type: ignore[attr-defined]

    # A text and an image together (half each): the frames of both shapes lead (4 red circles, 2 triangles).
    mixed = client.search("a red circle", picture, top_k=6, video_ids=FOLDER_IDS)
    assert sorted(shown(mixed)) == ["a green triangle"] * 2 + ["a red circle"] * 4
    # The general form with a path for the image gives the same moments.
    general = client.search(parts=[("a red circle", 0.5), (picture, 0.5)], top_k=6, video_ids=FOLDER_IDS)
    assert [(m.video_id, m.best_frame_s) for m in general] == [(m.video_id, m.best_frame_s) for m in mixed]

    either = client.search(any_texts=["a red circle", "a blue square"], max_per_video=1, video_ids=FOLDER_IDS)
    assert sorted(m.video_id for m in either) == sorted(FOLDER_IDS)
    assert set(shown(either)) <= {"a red circle", "a blue square"}

    pushed = client.search(
        "a red circle", any_texts=["a blue square"], negative_texts=["a blue square"], top_k=4, video_ids=FOLDER_IDS
    )
    assert shown(pushed) == ["a red circle"] * 4

    close = client.search("a red circle", relative_score=0.1, top_k=12, video_ids=FOLDER_IDS)
    assert shown(close) == ["a red circle"] * 4

    async def composed_async() -> list[str]:
        async with AsyncClient(client.target, token=TOKEN) as c:
            either = await c.search(any_texts=["a blue square", "a red circle"], top_k=2, video_ids="clip-south")
            return shown(either)

    assert asyncio.run(composed_async()) == ["a red circle"] * 2

    for bad in (
        {},
        {"text": "a red circle", "parts": [("a blue square", 1.0)]},
        {"text": "a red circle", "image_weight": 0.3},
        {"text": "a red circle", "image": picture, "image_weight": 1.5},
    ):
        with pytest.raises(ValueError):
            client.search(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_per_video is a count of moments per video"):
        client.search("a red circle", max_per_video=-1)
