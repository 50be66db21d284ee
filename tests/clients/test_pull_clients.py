"""The clients' PULL ingest: Client/AsyncClient.ingest_url and stop_ingest, `moments ingest URL --id ...` with
its progress, Ctrl-C and `moments stop`, against the live server of these tests and real sources on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from moments_client import AsyncClient, Client, MomentsError
from moments_client.sample_video import write_shapes_video
from moments_client.types import IngestCommitted, IngestDone, IngestPull
from tests.clients.conftest import TOKEN, run_cli
from tests.live import LiveServer
from tests.pull_sources import RtspServer, needs_rtsp, serve_hls

SHAPES = [("red", "circle"), ("blue", "square")]


@pytest.fixture(scope="module")
def hls_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_hls(tmp_path_factory.mktemp("hls-clients"), SHAPES) as url:
        yield url


def test_python_clients_pull_a_playlist(server: LiveServer, hls_url: str) -> None:
    with Client(server.target, token=TOKEN) as client:
        events = list(client.ingest_url_events(hls_url, "py-pull", segment_s=2.0, metadata={"camera": "hls"}))
        done = events[-1]
        assert isinstance(done, IngestDone) and done.video.state == "complete" and done.frames == 8
        assert [e.media_s for e in events if isinstance(e, IngestCommitted)][:4] == [2.0, 4.0, 6.0, 8.0]
        assert any(isinstance(e, IngestPull) and e.media_s >= 7.0 for e in events)
        assert done.video.metadata == {"camera": "hls"}
        hits = client.search("a blue square", top_k=3, video_ids=["py-pull"])
        assert hits and 4 <= hits[0].start_s < 8
        with pytest.raises(MomentsError) as e:
            client.stop_ingest("py-pull")  # it has ended
        assert e.value.code == grpc.StatusCode.NOT_FOUND
        with pytest.raises(MomentsError) as e:
            client.ingest_url("file:///etc/passwd", "py-file")
        assert e.value.code == grpc.StatusCode.INVALID_ARGUMENT

    async def pull_async() -> IngestDone:
        async with AsyncClient(server.target, token=TOKEN) as aclient:
            return await aclient.ingest_url(hls_url, "py-pull", replace=True)

    done = asyncio.run(pull_async())
    assert done.video.state == "complete" and done.frames == 8


def test_cli_pulls_a_playlist_with_progress(server: LiveServer, hls_url: str) -> None:
    result = run_cli("ingest", hls_url, "--id", "cli-pull", "--segment-s", "1", "--json", target=server.target)
    assert result.returncode == 0, result.output
    assert json.loads(result.stdout) == {"video_id": "cli-pull", "state": "complete", "frames": 8, "duration_s": 8.0}
    assert "committed" in result.stderr and "lag" in result.stderr
    usage = run_cli("ingest", hls_url, target=server.target)
    assert usage.returncode == 2 and "--id" in usage.stderr
    missing = run_cli("stop", "nothing-runs", target=server.target)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


@pytest.fixture(scope="module")
def camera(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RtspServer]:
    folder = tmp_path_factory.mktemp("rtsp-clients")
    write_shapes_video(folder / "cam.mkv", SHAPES * 4, seconds_each=4.0, fps=10, codec_options={"g": "10", "bf": "0"})
    cam = RtspServer(folder / "cam.mkv", folder / "rtsp.log")
    yield cam
    cam.stop()


def start_cli_pull(server: LiveServer, url: str, video_id: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update({"MOMENTS_TARGET": server.target, "MOMENTS_TOKEN": TOKEN, "NO_COLOR": "1", "COLUMNS": "200"})
    args = [sys.executable, "-m", "moments_client.cli", "ingest", url, "--id", video_id, "--segment-s", "1", "--json"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_commit(proc: subprocess.Popen[str]) -> str:
    assert proc.stderr is not None
    for line in proc.stderr:
        if line.startswith("committed"):
            return line
    raise AssertionError(f"no commit before the CLI ended: {proc.wait()}")


@needs_rtsp
def test_ctrl_c_ends_a_cli_pull_complete(server: LiveServer, camera: RtspServer) -> None:
    proc = start_cli_pull(server, camera.url, "cli-rtsp")
    try:
        assert "lag" in wait_for_commit(proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    summary = json.loads(stdout)
    assert summary["video_id"] == "cli-rtsp" and summary["state"] == "complete" and summary["frames"] >= 1


@needs_rtsp
def test_moments_stop_ends_a_running_pull(server: LiveServer, camera: RtspServer) -> None:
    proc = start_cli_pull(server, camera.url, "cli-stop")
    try:
        wait_for_commit(proc)
        stopped = run_cli("stop", "cli-stop", "--json", target=server.target)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert stopped.returncode == 0, stopped.output
    assert proc.returncode == 0, stderr
    stop_summary, ingest_summary = json.loads(stopped.stdout), json.loads(stdout)
    assert stop_summary["video_id"] == ingest_summary["video_id"] == "cli-stop"
    assert stop_summary["state"] == ingest_summary["state"] == "complete"
    assert set(stop_summary) == set(ingest_summary) == {"video_id", "state", "frames", "duration_s"}


def test_stop_of_an_unknown_id_is_not_found(server: LiveServer, tmp_path: Path) -> None:
    with Client(server.target, token=TOKEN) as client, pytest.raises(MomentsError) as e:
        client.stop_ingest("never-ingested")
    assert e.value.code == grpc.StatusCode.NOT_FOUND and "never-ingested" in e.value.message
