"""One live Moments server (shapes-demo, embedded store, bearer token required) for all client tests, a folder of
generated videos with known shapes at known seconds, and a helper that runs the `moments` CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moments_client.sample_video import Segment, write_shapes_video
from tests.live import LiveServer

TOKEN = "client-tests-token"

# relative path under the folder → (codec, shapes); 2 s per shape, 256x256
FOLDER_VIDEOS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "clip-north.mp4": ("h264", [("red", "circle"), ("blue", "square")]),
    "south/clip-south.mp4": ("h264", [("green", "triangle"), ("red", "circle")]),
    "south/deeper/clip-east.avi": ("mpeg4", [("yellow", "cross"), ("blue", "square")]),
}


@dataclass
class Videos:
    folder: Path
    schedule: dict[str, list[Segment]]  # video id (file stem) → what is on screen when

    def segment(self, video_id: str, caption: str) -> Segment:
        return next(s for s in self.schedule[video_id] if s.caption == caption)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


@pytest.fixture(scope="session")
def server(shapes_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("clients-server")
    live = LiveServer(shapes_model_dir, f"embedded:{workdir / 'data'}", workdir, "--auth-token", TOKEN)
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Videos:
    folder = tmp_path_factory.mktemp("library")
    schedule = {}
    for seed, (rel, (codec, shapes)) in enumerate(FOLDER_VIDEOS.items()):
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        schedule[path.stem] = write_shapes_video(
            path, shapes, seconds_each=2.0, fps=10, size=(256, 256), codec=codec, seed=seed
        )
    (folder / "south" / "notes.txt").write_text("not a video: the folder walk skips it")
    return Videos(folder, schedule)


def run_cli(*args: str, target: str | None = None, token: str | None = TOKEN, timeout: float = 300) -> CliResult:
    """`python -m moments_client.cli ARGS` with MOMENTS_TARGET/MOMENTS_TOKEN set, a wide terminal, no colours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
    env.update({"COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"})
    if target:
        env["MOMENTS_TARGET"] = target
    if token:
        env["MOMENTS_TOKEN"] = token
    proc = subprocess.run(
        [sys.executable, "-m", "moments_client.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@dataclass
class Library:
    videos: Videos
    ingest: CliResult  # the output of the CLI's ingest
    target: str


@pytest.fixture(scope="session")
def library(server: LiveServer, videos: Videos) -> Library:
    """The folder ingested once through the CLI with --parallel 2 (test_cli.py checks that output)."""
    result = run_cli(
        "ingest", str(videos.folder), "--parallel", "2", "--meta", "site=lab", "--meta", "floor=1", target=server.target
    )
    assert result.returncode == 0, result.output
    return Library(videos, result, server.target)
