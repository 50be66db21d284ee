"""The generated TypeScript client's test (clients/typescript/test/) against the live server: it installs its own
packages (npm ci), generates the client with buf, ingests a sample video by stream and searches it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.clients.conftest import TOKEN, run_cli
from tests.live import REPO, LiveServer


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_typescript_client(server: LiveServer, tmp_path: Path) -> None:
    video = tmp_path / "ts-sample.mp4"
    made = run_cli("sample-video", str(video), "--shapes", "blue:square,red:circle,green:triangle", "--json")
    assert made.returncode == 0, made.output
    env = dict(os.environ)
    env.update(
        {
            "MOMENTS_TARGET": server.target,
            "MOMENTS_TOKEN": TOKEN,
            "MOMENTS_SAMPLE_VIDEO": str(video),
            "MOMENTS_SAMPLE_SCHEDULE": made.stdout,
        }
    )
    proc = subprocess.run(
        ["bash", str(REPO / "clients" / "typescript" / "test.sh"), "test"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "# pass 1" in proc.stdout and "# fail 0" in proc.stdout, output
    assert json.loads(made.stdout)[1]["caption"] == "a red circle"
