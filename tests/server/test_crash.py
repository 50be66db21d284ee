"""kill -9 during concurrent ingests, restart on the same data directory, and check what survived.

Each round starts the real server on one data directory, runs INGESTERS concurrent ingest loops of real
videos, and SIGKILLs the server after a seeded random delay (mid-upload, mid-decode, mid-commit or idle).
The next round's start reopens the store and checks: every video whose `done` event arrived is listed
with the acknowledged frame count and a Search scoped to it returns that many frames; no other video is
visible unless it was being ingested (a commit whose `done` was lost to the kill) and then it is whole;
no blob file is left that no row references; no spool file is left behind.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from tests.live import LiveServer
from tests.server.conftest import ingest_requests

ROUNDS = int(os.environ.get("MOMENTS_CRASH_ROUNDS", "20"))
INGESTERS = 3
SEED = int(os.environ.get("MOMENTS_CRASH_SEED", "13"))
KILL_AFTER_S = (0.05, 2.0)  # uniform: some kills land before any upload finishes, some after several


@dataclass
class CrashRun:
    acked: dict[str, int] = field(default_factory=dict)  # video_id → frames in its done event
    attempted: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)  # lost, partial or unexpected videos
    orphan_blobs: list[str] = field(default_factory=list)
    spool_left: list[str] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # per kill: the server's exit status
    searched: set[str] = field(default_factory=set)


def _videos(folder: Path) -> list[Path]:
    """Big enough (MJPEG) that the upload is a blob file rather than an inline row, plus one small h264."""
    out = []
    shapes = [("red", "circle"), ("blue", "square"), ("green", "triangle")]
    for i in range(2):
        p = folder / f"clip{i}.avi"
        write_shapes_video(p, shapes[i:] + shapes[:i], seconds_each=2.0, fps=10, size=(384, 384), codec="mjpeg", seed=i)
        out.append(p)
    p = folder / "small.mp4"
    write_shapes_video(p, shapes, seconds_each=1.0, fps=10, seed=5)
    out.append(p)
    assert max(p.stat().st_size for p in out) > 256 * 1024, "want at least one upload stored as a blob file"
    return out


def _list_all(stub: pb_grpc.VideoSearchStub) -> dict[str, int]:
    out: dict[str, int] = {}
    token = ""
    while True:
        page = stub.ListVideos(pb.ListVideosRequest(page_size=1000, page_token=token), timeout=30)
        out.update({v.video_id: v.frames for v in page.videos})
        token = page.next_page_token
        if not token:
            return out


def _check(server: LiveServer, work: Path, run: CrashRun, label: str) -> None:
    data_dir = work / "data"
    with grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.VideoSearchStub(channel)
        listed = _list_all(stub)
        for vid, frames in run.acked.items():
            if vid not in listed:
                run.problems.append(f"{label}: acknowledged {vid} is missing")
            elif listed[vid] != frames:
                run.problems.append(f"{label}: {vid} lists {listed[vid]} frames, {frames} were acknowledged")
        for vid in set(listed) - run.attempted:
            run.problems.append(f"{label}: {vid} is listed but was never ingested")
        for vid, frames in listed.items():
            if vid in run.searched:
                continue
            got = stub.GetVideo(pb.GetVideoRequest(video_id=vid), timeout=30)
            scoped = pb.SearchRequest(text="a red circle", top_k=100, filters=pb.SearchFilters(video_ids=[vid]))
            hits = stub.Search(scoped, timeout=30).moments
            if got.frames != frames or len(hits) != frames or any(m.video_id != vid for m in hits):
                run.problems.append(
                    f"{label}: {vid} partial: listed {frames} frames, GetVideo {got.frames}, search {len(hits)}"
                )
            run.searched.add(vid)
        # frames of an ingest that was killed before its commit must not be found either
        unlisted = sorted(run.attempted - set(listed))[:1000]
        if unlisted:
            ghost = pb.SearchRequest(text="a red circle", top_k=100, filters=pb.SearchFilters(video_ids=unlisted))
            hits = stub.Search(ghost, timeout=30).moments
            run.problems += [f"{label}: frames of unlisted {m.video_id} are searchable" for m in hits]
    referenced = _referenced_blob_files(data_dir)
    blobs = {p.name for p in (data_dir / "blobs").glob("*/*") if p.is_file()}
    run.orphan_blobs += [f"{label}: {n}" for n in sorted(blobs - referenced)]
    # LiveServer spools into its workdir
    run.spool_left += [f"{label}: {p.name}" for p in sorted(work.glob("moments-upload-*"))]


def _referenced_blob_files(data_dir: Path) -> set[str]:
    db = sqlite3.connect(f"file:{data_dir / 'store.sqlite3'}?mode=ro", uri=True)
    try:
        return {r[0] for r in db.execute("SELECT file FROM blobdata WHERE file IS NOT NULL")}
    finally:
        db.close()


def _ingest_loop(target: str, client: int, rnd: int, videos: list[Path], run: CrashRun, stop: threading.Event) -> None:
    rng = random.Random(SEED * 1000 + rnd * 10 + client)
    with grpc.insecure_channel(target) as channel:
        stub = pb_grpc.VideoSearchStub(channel)
        n = 0
        while not stop.is_set():
            vid = f"r{rnd}-c{client}-{n}"
            n += 1
            run.attempted.add(vid)
            path = rng.choice(videos)
            try:
                for ev in stub.Ingest(ingest_requests(path, vid, sampling=pb.SamplingOptions(fps=2)), timeout=60):
                    if ev.WhichOneof("event") == "done":
                        run.acked[vid] = ev.done.frames
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE:  # the kill; anything else is a finding
                    run.problems.append(f"ingest {vid}: {e.code().name}: {e.details()}")
                return


@pytest.fixture(scope="module")
def crash_run(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashRun]:
    work = tmp_path_factory.mktemp("crash")
    videos = _videos(work)
    data_dir = work / "data"
    run = CrashRun()
    rng = random.Random(SEED)
    for rnd in range(ROUNDS + 1):
        server = LiveServer(
            shapes_model_dir, f"embedded:{data_dir}", work, "--no-autotune-batches", "--log-level", "WARNING"
        )
        try:
            _check(server, work, run, f"round {rnd}")
            if rnd == ROUNDS:
                break
            stop = threading.Event()
            threads = [
                threading.Thread(target=_ingest_loop, args=(server.target, c, rnd, videos, run, stop), daemon=True)
                for c in range(INGESTERS)
            ]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(*KILL_AFTER_S))
            server.stop(sig_kill=True)
            run.exits.append(server.proc.returncode)
            stop.set()
            for t in threads:
                t.join(60)
                assert not t.is_alive(), "an ingest did not end after the kill"
        finally:
            server.stop()
    print(f"crash: {len(run.exits)} kills, {len(run.acked)} of {len(run.attempted)} ingests acknowledged")
    yield run


def test_kills_happened_and_ingests_were_acknowledged(crash_run: CrashRun) -> None:
    # each kill hit a running server: none had exited on its own before it (its status would not be SIGKILL's)
    assert crash_run.exits == [-signal.SIGKILL] * ROUNDS, crash_run.exits
    # the test is only worth something if kills landed both after and before acknowledgements
    assert len(crash_run.acked) >= ROUNDS // 2, crash_run.acked
    assert len(crash_run.attempted) > len(crash_run.acked)


def test_acknowledged_videos_complete_and_nothing_partial(crash_run: CrashRun) -> None:
    assert crash_run.problems == []


def test_no_orphan_blob_files(crash_run: CrashRun) -> None:
    assert crash_run.orphan_blobs == []


def test_no_spool_files_left(crash_run: CrashRun) -> None:
    assert crash_run.spool_left == []
