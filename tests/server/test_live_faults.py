"""LIVE ingest under faults and concurrency, against real server processes: kill -9 at random points of live
streams (what was reported committed survives whole, nothing else is visible or left over in the store, the
stream resumes without a frame missing or twice), a video left "live" by a crash is "interrupted" at start,
concurrent streams with searches running, replace and delete of a live video, undecodable bytes mid-stream.

The store is inspected through its ApertureDB wire listener (--store-listen) with the real `aperturedb` SDK:
counts of a video's clips, descriptors and segment blobs through the graph, and store-wide orphans.
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
from typing import Any

import grpc
import pytest

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.sample_video import write_shapes_video
from moments_server.inference.manifest import load_manifest
from tests.live import LiveServer, free_port
from tests.server.conftest import ingest_requests
from tests.server.streams import STREAM_SHAPES as SHAPES
from tests.server.streams import Feed, frames_of

SECONDS_EACH = 3.0
SAMPLE_FPS = 2.0  # one frame per 0.5 s window
SEGMENT_S = 1.0  # two frames a segment
FRAMES = round(len(SHAPES) * SECONDS_EACH * SAMPLE_FPS)  # 24
PASSWORD = "live-faults"
FRAME, SEGMENT = "has_frame", "has_segment"  # the graph's edges: Clip → Descriptor, Video → segment Blob
ROUNDS = int(os.environ.get("MOMENTS_LIVE_KILL_ROUNDS", "10"))
SEED = int(os.environ.get("MOMENTS_LIVE_KILL_SEED", "7"))


def start_server(model_dir: Path, workdir: Path, *extra: str) -> tuple[LiveServer, int]:
    """A server on `workdir/data` with its store's wire listener (user admin, PASSWORD) on a free port."""
    for attempt in range(3):
        try:
            return _start_server(model_dir, workdir, *extra)
        except RuntimeError as e:
            # a port free_port() chose was taken before the server bound it (other tests on this host)
            if "in use" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _start_server(model_dir: Path, workdir: Path, *extra: str) -> tuple[LiveServer, int]:
    port = free_port()
    server = LiveServer(
        model_dir,
        f"embedded:{workdir / 'data'}",
        workdir,
        *extra,
        "--no-autotune-batches",
        "--log-level",
        "WARNING",
        "--store-listen",
        f"127.0.0.1:{port}",
        "--store-listen-user",
        "admin",
        "--store-listen-password",
        PASSWORD,
    )
    return server, port


class Store:
    """The server's store seen through the ApertureDB SDK."""

    def __init__(self, port: int, descriptor_set: str) -> None:
        from aperturedb.Connector import Connector

        self.db = Connector(
            host="127.0.0.1",
            port=port,
            user="admin",
            password=PASSWORD,
            use_ssl=True,
            verify_hostname=False,
            retry_interval_seconds=0,
        )
        self.set = descriptor_set

    def query(self, commands: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[bytes]]:
        response, blobs = self.db.query(commands)
        assert isinstance(response, list), response
        for r in response:
            ((_, body),) = r.items()
            assert body.get("status", 0) >= 0, response
        return response, blobs

    def close(self) -> None:
        self.db.close()

    def of_video(self, video_id: str) -> dict[str, Any]:
        """A video's stored parts: clips (through the graph and by property), descriptors of those clips,
        their states, its blob's length and its segment blobs' byte ranges."""
        by_id = {"video_id": ["==", video_id]}
        r, blobs = self.query(
            [
                {"FindVideo": {"_ref": 1, "constraints": by_id, "blobs": True, "results": {"list": ["state"]}}},
                {"FindClip": {"_ref": 2, "video_ref": 1, "results": {"count": True}}},
                {
                    "FindDescriptor": {
                        "set": self.set,
                        "is_connected_to": {"ref": 2, "connection_class": FRAME},
                        "results": {"list": ["state", "start_s"]},
                    }
                },
                {
                    "FindBlob": {
                        "is_connected_to": {"ref": 1, "connection_class": SEGMENT},
                        "results": {"list": ["byte_start", "byte_end"]},
                    }
                },
                {"FindClip": {"constraints": by_id, "results": {"count": True}}},
                {"FindDescriptor": {"set": self.set, "constraints": by_id, "results": {"count": True}}},
                {"FindBlob": {"constraints": by_id, "results": {"count": True}}},
            ]
        )
        videos = r[0]["FindVideo"].get("entities") or []
        descriptors = r[2]["FindDescriptor"].get("entities") or []
        segments = r[3]["FindBlob"].get("entities") or []
        return {
            "videos": len(videos),
            "blob": len(blobs[videos[0]["_blob_index"]]) if videos and "_blob_index" in videos[0] else 0,
            "clips": r[1]["FindClip"].get("count", 0),
            "descriptors": len(descriptors),
            "states": sorted({d["state"] for d in descriptors}),
            "segments": sorted((int(s["byte_start"]), int(s["byte_end"])) for s in segments),
            "clips_by_id": r[4]["FindClip"].get("count", 0),
            "descriptors_by_id": r[5]["FindDescriptor"].get("count", 0),
            "blobs_by_id": r[6]["FindBlob"].get("count", 0),
        }

    def orphans(self) -> dict[str, int]:
        """Clips on no video, descriptors on no clip, blobs on no video, and anything "live"."""
        count = {"results": {"count": True}}
        on_clips = {"ref": 2, "connection_class": FRAME}
        r, _ = self.query(
            [
                {"FindVideo": {"_ref": 1, "results": {"count": True}}},
                {"FindClip": {"_ref": 2, "video_ref": 1, **count}},
                {"FindClip": count},
                {"FindDescriptor": {"set": self.set, "is_connected_to": on_clips, **count}},
                {"FindDescriptor": {"set": self.set, **count}},
                {"FindBlob": {"is_connected_to": {"ref": 1, "connection_class": SEGMENT}, **count}},
                {"FindBlob": count},
                {"FindVideo": {"constraints": {"state": ["==", "live"]}, **count}},
                {"FindDescriptor": {"set": self.set, "constraints": {"state": ["==", "live"]}, **count}},
            ]
        )
        n = [next(iter(x.values())).get("count", 0) for x in r]
        return {
            "clips": n[2] - n[1],
            "descriptors": n[4] - n[3],
            "blobs": n[6] - n[5],
            "live videos": n[7],
            "live frames": n[8],
        }


def blob_files_unreferenced(data_dir: Path) -> list[str]:
    """Blob files on disk that no store row references (the store's recovery removes them at start)."""
    db = sqlite3.connect(f"file:{data_dir / 'store.sqlite3'}?mode=ro", uri=True)
    try:
        referenced = {r[0] for r in db.execute("SELECT file FROM blobdata WHERE file IS NOT NULL")}
    finally:
        db.close()
    return sorted(p.name for p in (data_dir / "blobs").glob("*/*") if p.is_file() and p.name not in referenced)


@pytest.fixture(scope="module")
def small_stream(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """These tests' stream, shorter and smaller than conftest's stream_bytes: 12 s of 96x96 MPEG-TS,
    red circle 0-3 s, blue square 3-6 s, green triangle 6-9 s, yellow cross 9-12 s."""
    path = tmp_path_factory.mktemp("ts") / "cam.ts"
    write_shapes_video(path, SHAPES, seconds_each=SECONDS_EACH, fps=10, size=(96, 96), codec="h264")
    return path.read_bytes()


LIVE = {"segment_s": SEGMENT_S, "sampling": pb.SamplingOptions(fps=SAMPLE_FPS)}  # these streams' header options


def header(video_id: str, **kw: Any) -> pb.IngestHeader:
    return pb.IngestHeader(video_id=video_id, mode=pb.INGEST_MODE_LIVE, **LIVE, **kw)


def held(video_id: str, data: bytes) -> Feed:
    """A camera that sends the first half of the stream, then holds until its `release`, then the rest."""
    return Feed(video_id, data, hold_at=len(data) // 2, chunk=2048, **LIVE)


def requests(h: pb.IngestHeader, data: bytes, chunk: int = 2048, pause_s: float = 0.0) -> Iterator[pb.IngestRequest]:
    """The header, then the bytes (a camera: `pause_s` between chunks)."""
    yield pb.IngestRequest(header=h)
    for i in range(0, len(data), chunk):
        if pause_s and i:
            time.sleep(pause_s)
        yield pb.IngestRequest(chunk=data[i : i + chunk])


def windows(stub: pb_grpc.VideoSearchStub, video_id: str, complete_only: bool = False) -> list[float]:
    """The sampling windows (start_s) of every frame a search scoped to the video finds, sorted."""
    f = pb.SearchFilters(video_ids=[video_id], complete_only=complete_only)
    hits = stub.Search(pb.SearchRequest(text="a red circle", top_k=100, filters=f), timeout=30).moments
    assert all(m.video_id == video_id for m in hits)
    return sorted(m.start_s for m in hits)


def get_video(stub: pb_grpc.VideoSearchStub, video_id: str) -> pb.Video | None:
    """The video, or None if there is none (NOT_FOUND); any other error is raised as it came."""
    try:
        return stub.GetVideo(pb.GetVideoRequest(video_id=video_id), timeout=30)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.NOT_FOUND:
            raise
        return None


def wait_interrupted(stub: pb_grpc.VideoSearchStub, video_id: str) -> pb.Video:
    """The video once its broken stream has left it "interrupted" (polled for up to 10 s)."""
    video = None
    for _ in range(100):
        video = get_video(stub, video_id)
        if video is not None and video.state == "interrupted":
            return video
        time.sleep(0.1)
    raise AssertionError(f"{video_id} is not interrupted after 10 s: {video}")


@pytest.fixture(scope="module")
def descriptor_set(shapes_model_dir: Path) -> str:
    return load_manifest(shapes_model_dir).descriptor_set


@pytest.mark.parametrize("restart", ["server", "launcher"])
def test_a_video_left_live_by_a_crash_is_interrupted_at_start_and_resumable(
    shapes_model_dir: Path, descriptor_set: str, small_stream: bytes, tmp_path: Path, restart: str
) -> None:
    first, _ = start_server(shapes_model_dir, tmp_path)
    committed = None
    try:
        with grpc.insecure_channel(first.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            call = stub.Ingest(requests(header("crashed"), small_stream, pause_s=0.2), timeout=60)
            for ev in call:
                if ev.WhichOneof("event") == "accepted":
                    upload_id = ev.accepted.upload_id
                if ev.WhichOneof("event") == "committed" and ev.committed.media_s >= 2.0:
                    committed = ev.committed
                    assert get_video(stub, "crashed").state == "live"  # type: ignore[union-attr]
                    first.stop(sig_kill=True)
                    break
    finally:
        first.stop(sig_kill=True)
    assert committed is not None
    # a server alone marks them; with --workers the launcher that owns the store does
    second, port = start_server(shapes_model_dir, tmp_path, *(["--workers", "2"] if restart == "launcher" else []))
    store = Store(port, descriptor_set)
    try:
        with grpc.insecure_channel(second.target) as ch:
            stub = pb_grpc.VideoSearchStub(ch)
            video = get_video(stub, "crashed")
            assert video is not None and video.state == "interrupted", video
            assert video.frames >= committed.frames and video.size_bytes >= committed.bytes
            parts = store.of_video("crashed")
            assert parts["states"] == ["interrupted"] and parts["descriptors"] == video.frames, parts
            assert windows(stub, "crashed") == [k / SAMPLE_FPS for k in range(video.frames)]
            assert windows(stub, "crashed", complete_only=True) == []
            # still resumable, from where the server stands
            events = list(
                stub.Ingest(
                    requests(
                        header("crashed", resume_upload_id=upload_id, resume_offset=video.size_bytes),
                        small_stream[video.size_bytes :],
                    ),
                    timeout=60,
                )
            )
            assert events[0].accepted.offset == video.size_bytes
            done = events[-1].done
            assert done.video.state == "complete" and done.frames == FRAMES
            assert windows(stub, "crashed", complete_only=True) == [k / SAMPLE_FPS for k in range(FRAMES)]
            assert store.of_video("crashed")["states"] == ["complete"]
    finally:
        store.close()
        second.stop()


@dataclass
class Stream:
    """What the camera heard of one video's streams across the kills."""

    video_id: str
    upload_id: str = ""
    committed: pb.IngestCommitted | None = None  # the last commit reported
    done: pb.IngestDone | None = None
    commits: int = 0


@dataclass
class KillRun:
    streams: list[Stream] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    exits: list[int] = field(default_factory=list)  # per kill: the server's exit status
    resumes: int = 0  # resumes the server accepted
    redirected: int = 0  # resumes refused with the server's offset (it had committed more than reported)
    lives: list[str] = field(default_factory=list)  # per server life: the stream, its commits then, done


def check_after_restart(
    stub: pb_grpc.VideoSearchStub, store: Store, workdir: Path, data: bytes, run: KillRun, label: str
) -> None:
    """The guarantees, after a restart, for every stream so far (appends what breaks them to run.problems)."""
    p = run.problems
    for s in run.streams:
        where = f"{label}, {s.video_id}"
        video = get_video(stub, s.video_id)
        parts = store.of_video(s.video_id)
        reported = s.done.video.size_bytes if s.done else s.committed.bytes if s.committed else 0
        if video is None:
            if reported:
                p.append(f"{where}: {reported} bytes were reported committed, the video is gone")
            if any(parts[k] for k in ("videos", "clips_by_id", "descriptors_by_id", "blobs_by_id")):
                p.append(f"{where}: nothing was committed, yet the store holds {parts}")
            continue
        # what was reported committed is there (the server may have committed more: its report was lost)
        if s.committed and (video.size_bytes < s.committed.bytes or video.frames < s.committed.frames):
            p.append(f"{where}: {video.size_bytes} B / {video.frames} frames stored, {s.committed} reported")
        if video.state not in ("interrupted", "complete") or (s.done and video.state != "complete"):
            p.append(f"{where}: state {video.state!r} after a restart")
        if video.state == "complete" and (video.frames != FRAMES or video.size_bytes != len(data)):
            p.append(f"{where}: complete with {video.frames} frames, {video.size_bytes} bytes")
        # every committed window once, none missing, and nothing of an uncommitted segment
        expected = [k / SAMPLE_FPS for k in range(video.frames)]
        if windows(stub, s.video_id) != expected:
            p.append(f"{where}: search finds windows {windows(stub, s.video_id)}, expected {expected}")
        if parts["clips"] != video.frames or parts["descriptors"] != video.frames:
            p.append(f"{where}: {video.frames} frames, the store holds {parts}")
        if parts["clips_by_id"] != parts["clips"] or parts["descriptors_by_id"] != parts["descriptors"]:
            p.append(f"{where}: clips or descriptors off the video's graph: {parts}")
        if parts["states"] != [video.state]:
            p.append(f"{where}: video {video.state!r}, its frames {parts['states']}")
        # the stored bytes: the video's blob, then segment blobs end to end up to size_bytes
        at = parts["blob"]
        for start, end in parts["segments"]:
            if start != at:
                p.append(f"{where}: segment blob at {start}-{end}, expected one starting at {at}")
            at = end
        if at != video.size_bytes or parts["blobs_by_id"] != len(parts["segments"]):
            p.append(f"{where}: blobs cover {at} bytes of {video.size_bytes}: {parts}")
    orphans = store.orphans()
    if any(orphans.values()):
        p.append(f"{label}: orphans or live leftovers in the store: {orphans}")
    p += [f"{label}: unreferenced blob file {n}" for n in blob_files_unreferenced(workdir / "data")]
    p += [f"{label}: spool file left {f.name}" for f in workdir.glob("moments-upload-*")]


def stream_once(
    stub: pb_grpc.VideoSearchStub, s: Stream, data: bytes, run: KillRun, pause_s: float, killable: bool
) -> None:
    """Start or resume `s`'s stream and follow it until it ends: done, or (`killable`) the kill, which may land
    at any of its calls and ends that call UNAVAILABLE. Any other status is a finding (run.problems); any other
    exception is raised (on a thread: see Follower)."""
    try:
        _follow(stub, s, data, run, pause_s)
    except grpc.RpcError as e:
        if not (killable and e.code() == grpc.StatusCode.UNAVAILABLE):
            run.problems.append(f"{s.video_id}: {e.code().name}: {e.details()}")


def _follow(stub: pb_grpc.VideoSearchStub, s: Stream, data: bytes, run: KillRun, pause_s: float) -> None:
    video = get_video(stub, s.video_id)
    if video is None or not s.upload_id:
        h, offset = header(s.video_id, replace=video is not None), 0
    else:
        # the camera resumes from what it was told; a server that committed more says where it stands
        offset = s.committed.bytes if s.committed else 0
        h = header(s.video_id, resume_upload_id=s.upload_id, resume_offset=offset)
        if offset != video.size_bytes:
            try:
                list(stub.Ingest(requests(h, data[offset:]), timeout=60))
                run.problems.append(f"{s.video_id}: resume from {offset} accepted, the server has {video.size_bytes}")
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    raise  # the kill landed here; stream_once tells
                want = f"resume from offset {video.size_bytes}"
                if e.code() != grpc.StatusCode.FAILED_PRECONDITION or want not in (e.details() or ""):
                    run.problems.append(f"{s.video_id}: resume from {offset}: {e.code()} {e.details()}")
            run.redirected += 1
            offset = video.size_bytes
            h.resume_offset = offset
    for ev in stub.Ingest(requests(h, data[offset:], pause_s=pause_s), timeout=60):
        kind = ev.WhichOneof("event")
        if kind == "accepted":
            s.upload_id = ev.accepted.upload_id
            run.resumes += bool(h.resume_upload_id)
            if ev.accepted.offset != offset:
                run.problems.append(f"{s.video_id}: accepted at {ev.accepted.offset}, resumed at {offset}")
        elif kind == "committed":
            s.committed = ev.committed
            s.commits += 1
        elif kind == "done":
            s.done = ev.done


class Follower(threading.Thread):
    """stream_once (killable) on a thread of its own; `error` keeps what it raised, for the test to raise again
    (a thread's exception would otherwise be lost)."""

    def __init__(self, stub: pb_grpc.VideoSearchStub, s: Stream, data: bytes, run: KillRun, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.call = (stub, s, data, run, pause_s)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            stream_once(*self.call, killable=True)
        except BaseException as e:  # handed to the test, which raises it
            self.error = e


def test_kill_9_at_random_points_of_live_streams(
    shapes_model_dir: Path, descriptor_set: str, small_stream: bytes, tmp_path: Path
) -> None:
    """ROUNDS server lives on one data dir, each killed after a seeded random delay into a paced live stream
    (before its first commit, mid-decode, mid-commit, or after its end). After each restart the guarantees
    hold; the streams resume where the server stands; at the end each completes as the unbroken stream."""
    rng = random.Random(SEED)
    pause_s = 0.04
    stream_s = pause_s * len(small_stream) / 2048  # about how long the camera takes to send the whole stream
    run = KillRun()
    reference: list[tuple[float, float]] = []
    for rnd in range(ROUNDS + 1):
        server, port = start_server(shapes_model_dir, tmp_path)
        store = Store(port, descriptor_set)
        try:
            with grpc.insecure_channel(server.target) as ch:
                stub = pb_grpc.VideoSearchStub(ch)
                check_after_restart(stub, store, tmp_path, small_stream, run, f"after kill {rnd}")
                if rnd == 0:  # the unbroken stream, to compare with
                    list(stub.Ingest(requests(header("unbroken"), small_stream), timeout=60))
                    reference = frames_of(stub, "unbroken")
                    assert len(reference) == FRAMES * len(SHAPES)
                if rnd == ROUNDS:  # the last life: every stream resumes to its end, unkilled
                    for s in run.streams:
                        if s.done is None:
                            stream_once(stub, s, small_stream, run, 0.0, killable=False)
                        if s.done is None or frames_of(stub, s.video_id) != reference:
                            run.problems.append(f"{s.video_id}: not completed as the unbroken stream: {s.done}")
                    break
                if not run.streams or run.streams[-1].done is not None:
                    run.streams.append(Stream(f"cam-{len(run.streams)}"))
                current = run.streams[-1]
                before = current.commits
                follower = Follower(stub, current, small_stream, run, pause_s)
                follower.start()
                time.sleep(rng.uniform(0.0, stream_s * 1.2))
                server.stop(sig_kill=True)
                run.exits.append(server.proc.returncode)
                follower.join(30)
                assert not follower.is_alive(), "the stream did not end with the server"
                if follower.error is not None:
                    raise follower.error
                run.lives.append(f"{current.video_id} +{current.commits - before}{' done' if current.done else ''}")
        finally:
            store.close()
            server.stop(sig_kill=True)
    summary = [(s.video_id, s.commits, s.done is not None) for s in run.streams]
    print(f"live kills: {len(run.exits)}, resumes {run.resumes} ({run.redirected} redirected), lives {run.lives}")
    assert run.problems == []
    # each kill hit a running server: none had exited on its own before it (its status would not be SIGKILL's)
    assert run.exits == [-signal.SIGKILL] * ROUNDS, run.exits
    # worth something only if kills landed between commits of a stream that then resumed, and a stream completed
    assert run.resumes >= 2 and any(s.done for s in run.streams), summary


@dataclass
class Served:
    server: LiveServer
    stub: pb_grpc.VideoSearchStub
    store: Store
    workdir: Path


@pytest.fixture(scope="module")
def served(shapes_model_dir: Path, descriptor_set: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("live-faults")
    server, port = start_server(shapes_model_dir, workdir, "--max-concurrent-ingests", "12")
    channel = grpc.insecure_channel(server.target)
    store = Store(port, descriptor_set)
    try:
        yield Served(server, pb_grpc.VideoSearchStub(channel), store, workdir)
    finally:
        store.close()
        channel.close()
        server.stop()


def test_eight_streams_and_an_upload_with_searches_running(served: Served, small_stream: bytes, tmp_path: Path) -> None:
    """8 LIVE streams and a file upload at once while a client searches: from the moment a commit is reported
    its frames are found (every window once, in order); every stream and the upload end complete."""
    stub, streams = served.stub, [f"many-{i}" for i in range(8)]
    reported = dict.fromkeys(streams, 0)  # frames reported committed, per stream
    done: dict[str, pb.IngestDone] = {}
    errors: list[str] = []
    finished = threading.Event()
    checks = [0]

    def stream(video_id: str) -> None:
        try:
            for ev in stub.Ingest(requests(header(video_id), small_stream, pause_s=0.02), timeout=120):
                if ev.WhichOneof("event") == "committed":
                    reported[video_id] = ev.committed.frames
                elif ev.WhichOneof("event") == "done":
                    done[video_id] = ev.done
        except grpc.RpcError as e:
            errors.append(f"{video_id}: {e.code().name}: {e.details()}")

    def upload(path: Path) -> None:
        try:
            for ev in stub.Ingest(ingest_requests(path, "uploaded", sampling=pb.SamplingOptions(fps=2)), timeout=120):
                if ev.WhichOneof("event") == "done":
                    done["uploaded"] = ev.done
        except grpc.RpcError as e:
            errors.append(f"upload: {e.code().name}: {e.details()}")

    def searcher() -> None:
        rng = random.Random(SEED)
        while not finished.is_set():
            video_id = rng.choice(streams)
            at_least = reported[video_id]  # before the search is sent
            try:
                found = windows(stub, video_id)
                stub.Search(pb.SearchRequest(text="a blue square", top_k=20), timeout=30)
            except grpc.RpcError as e:
                errors.append(f"search: {e.code().name}: {e.details()}")
                continue
            except AssertionError as e:  # windows() found another video's hit: a thread's failure is not raised
                errors.append(f"search of {video_id}: {e}")
                continue
            if len(found) < at_least or found != [k / SAMPLE_FPS for k in range(len(found))]:
                errors.append(f"search of {video_id} after {at_least} frames were reported: windows {found}")
            checks[0] += 1

    clip = tmp_path / "upload.mp4"
    write_shapes_video(clip, SHAPES[:2], seconds_each=2.0, fps=10, size=(96, 96))
    threads = [threading.Thread(target=stream, args=(v,)) for v in streams]
    threads.append(threading.Thread(target=upload, args=(clip,)))
    search_thread = threading.Thread(target=searcher)
    search_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    finished.set()
    search_thread.join(60)
    assert errors == []
    assert checks[0] >= 8, "too few searches ran while the streams did"
    for video_id in streams:
        assert done[video_id].video.state == "complete" and done[video_id].frames == FRAMES, video_id
        assert windows(stub, video_id, complete_only=True) == [k / SAMPLE_FPS for k in range(FRAMES)]
    assert done["uploaded"].video.state == "complete" and done["uploaded"].frames == 8
    assert windows(stub, "uploaded", complete_only=True) == [k / SAMPLE_FPS for k in range(8)]
    assert served.store.orphans() == dict.fromkeys(served.store.orphans(), 0)


def follow_until_commit(call: Any) -> tuple[str, pb.IngestCommitted]:
    upload_id = ""
    for ev in call:
        if ev.WhichOneof("event") == "accepted":
            upload_id = ev.accepted.upload_id
        if ev.WhichOneof("event") == "committed":
            return upload_id, ev.committed
    raise AssertionError("the stream ended before a commit")


def test_replacing_a_live_video(served: Served, small_stream: bytes, tmp_path: Path) -> None:
    stub, store = served.stub, served.store
    # while its stream runs, neither another stream nor an upload may replace it
    feed = held("cam-r", small_stream)
    call = stub.Ingest(iter(feed), timeout=120)
    first_upload, _ = follow_until_commit(call)
    clip = tmp_path / "other.mp4"
    write_shapes_video(clip, SHAPES[2:], seconds_each=1.0, fps=10, size=(96, 96))
    for attempt in (
        requests(header("cam-r", replace=True), small_stream),
        ingest_requests(clip, "cam-r", replace=True),
    ):
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(attempt, timeout=60))
        assert e.value.code() == grpc.StatusCode.ALREADY_EXISTS and "being ingested" in (e.value.details() or "")
    call.cancel()  # the camera's link drops: the video stays, interrupted
    feed.release.set()
    video = wait_interrupted(stub, "cam-r")
    old = store.of_video("cam-r")
    assert old["descriptors"] == video.frames > 0
    # a new stream replaces the interrupted one whole: its old segments go, its upload cannot be resumed
    events = list(
        stub.Ingest(requests(header("cam-r", replace=True), small_stream[: len(small_stream) // 3]), timeout=60)
    )
    assert events[0].accepted.replacing and events[0].accepted.upload_id != first_upload
    done = events[-1].done
    assert done.video.state == "complete" and done.video.size_bytes == len(small_stream) // 3
    parts = store.of_video("cam-r")
    assert parts["descriptors"] == parts["clips"] == done.frames and parts["states"] == ["complete"], parts
    assert parts["blob"] + sum(e - s for s, e in parts["segments"]) == done.video.size_bytes, parts
    assert windows(stub, "cam-r") == [k / SAMPLE_FPS for k in range(done.frames)]
    with pytest.raises(grpc.RpcError) as e:
        resume_h = header("cam-r", resume_upload_id=first_upload, resume_offset=video.size_bytes)
        list(stub.Ingest(requests(resume_h, small_stream[video.size_bytes :]), timeout=60))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "no live upload" in (e.value.details() or "")
    assert store.orphans() == dict.fromkeys(store.orphans(), 0)


def test_deleting_a_live_video_leaves_nothing_of_it(served: Served, small_stream: bytes) -> None:
    """Deleted mid-stream (its stream ends ABORTED: test_live.py) or after its stream broke: no clip,
    descriptor or segment blob of it stays, even of commits in flight at the delete; its id is free again."""
    stub, store = served.stub, served.store
    feed = held("cam-d", small_stream)
    call = stub.Ingest(iter(feed), timeout=120)
    follow_until_commit(call)
    stub.DeleteVideo(pb.DeleteVideoRequest(video_id="cam-d"), timeout=30)
    feed.release.set()
    with pytest.raises(grpc.RpcError) as e:
        list(call)
    assert e.value.code() == grpc.StatusCode.ABORTED
    nothing = {"videos": 0, "clips_by_id": 0, "descriptors_by_id": 0, "blobs_by_id": 0}
    assert {k: store.of_video("cam-d")[k] for k in nothing} == nothing
    # an interrupted live video
    feed = held("cam-d", small_stream)
    call = stub.Ingest(iter(feed), timeout=120)
    follow_until_commit(call)
    call.cancel()
    feed.release.set()
    wait_interrupted(stub, "cam-d")
    stub.DeleteVideo(pb.DeleteVideoRequest(video_id="cam-d"), timeout=30)
    assert {k: store.of_video("cam-d")[k] for k in nothing} == nothing
    assert get_video(stub, "cam-d") is None and windows(stub, "cam-d") == []
    assert store.orphans() == dict.fromkeys(store.orphans(), 0)


def test_undecodable_bytes_mid_stream(served: Served, tmp_path: Path) -> None:
    """A burst of zeros in the middle of a Matroska stream: the stream ends INVALID_ARGUMENT naming where (the
    same offset whether the stream was resumed before it or not), the video is "interrupted" with the whole
    segments decoded before the bad bytes, searchable."""
    stub, store = served.stub, served.store
    path = tmp_path / "cam.mkv"
    write_shapes_video(path, SHAPES, seconds_each=2.0, fps=10, size=(128, 128))
    data = path.read_bytes()
    half, junk = len(data) // 2, 50_000
    bad = data[:half] + bytes(junk) + data[half:]
    named = {}
    for video_id in ("bad-fresh", "bad-resumed"):
        offset, kw = 0, {}
        if video_id == "bad-resumed":  # a first stream breaks before the bad bytes, the resume runs into them
            call = stub.Ingest(requests(header(video_id), bad, pause_s=0.05), timeout=60)
            upload_id, committed = follow_until_commit(call)
            call.cancel()
            assert committed.bytes < half
            video = wait_interrupted(stub, video_id)
            assert video is not None and video.size_bytes < half, video
            offset, kw = video.size_bytes, {"resume_upload_id": upload_id, "resume_offset": video.size_bytes}
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(requests(header(video_id, **kw), bad[offset:]), timeout=60))
        details = e.value.details() or ""
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "stopped decoding at byte" in details, details
        named[video_id] = int(details.split("at byte ")[1].split()[0])
        video = get_video(stub, video_id)
        assert video is not None and video.state == "interrupted", video
        # the bad bytes start about 4 s in: the segments of the first 3 s are whole before them, and kept
        assert video.frames >= 6 and windows(stub, video_id) == [k / SAMPLE_FPS for k in range(video.frames)]
        hits = stub.Search(
            pb.SearchRequest(text="a red circle", top_k=1, filters=pb.SearchFilters(video_ids=[video_id])), timeout=30
        ).moments
        assert hits and hits[0].start_s < 2.0
        parts = store.of_video(video_id)
        assert parts["descriptors"] == parts["clips"] == video.frames and parts["states"] == ["interrupted"]
    # where the bad bytes are: the packet that runs into them (within one packet before them), or in them
    assert named["bad-fresh"] == named["bad-resumed"], named
    assert half - 8192 <= named["bad-fresh"] < half + junk, (named, half)
    assert store.orphans() == dict.fromkeys(store.orphans(), 0)


def test_resume_refusals_are_precise(served: Served, small_stream: bytes) -> None:
    """Beyond test_live.py's (offset + 1, unknown upload): an offset behind the server's, another video's
    upload, a complete video's upload; the video is untouched by each refusal and then resumes."""
    stub = served.stub
    call = stub.Ingest(requests(header("cam-x"), small_stream, pause_s=0.05), timeout=60)
    upload_id, _ = follow_until_commit(call)
    call.cancel()
    video = wait_interrupted(stub, "cam-x")
    list(stub.Ingest(requests(header("cam-y"), small_stream), timeout=60))
    complete_upload = ""
    for ev in stub.Ingest(requests(header("cam-z"), small_stream), timeout=60):
        if ev.WhichOneof("event") == "accepted":
            complete_upload = ev.accepted.upload_id
    stored = video.size_bytes
    for video_id, uid, offset, code, words in (
        ("cam-x", upload_id, stored - 1, grpc.StatusCode.FAILED_PRECONDITION, f"resume from offset {stored} (not"),
        ("cam-x", upload_id, 0, grpc.StatusCode.FAILED_PRECONDITION, f"resume from offset {stored} (not"),
        ("cam-y", upload_id, stored, grpc.StatusCode.NOT_FOUND, "no live upload"),
        ("cam-z", complete_upload, len(small_stream), grpc.StatusCode.FAILED_PRECONDITION, "is complete"),
    ):
        h = header(video_id, resume_upload_id=uid, resume_offset=offset)
        with pytest.raises(grpc.RpcError) as e:
            list(stub.Ingest(requests(h, small_stream[offset:]), timeout=60))
        assert e.value.code() == code and words in (e.value.details() or ""), (video_id, e.value.details())
    after = get_video(stub, "cam-x")
    assert after is not None and (after.frames, after.size_bytes, after.state) == (video.frames, stored, "interrupted")
    h = header("cam-x", resume_upload_id=upload_id, resume_offset=stored)
    done = list(stub.Ingest(requests(h, small_stream[stored:]), timeout=60))[-1].done
    assert done.video.state == "complete" and done.frames == FRAMES
    assert windows(stub, "cam-x") == [k / SAMPLE_FPS for k in range(FRAMES)]
