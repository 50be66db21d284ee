"""The generated TypeScript client's tests (clients/typescript/test/) against live servers: it installs its own
packages (npm ci), generates the client with buf, then in one `node --test` run ingests a sample video by
stream and searches it, streams an MPEG-TS file as a LIVE ingest (and resumes it through a link that drops),
and connects over TLS and mTLS to servers started here with test certificates."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from moments_client.sample_video import write_shapes_video
from tests.clients.conftest import TOKEN, run_cli
from tests.live import REPO, LiveServer, free_port, start_server
from tests.pki import make_pki

# the live stream: 16 s of MPEG-TS, 4 s per shape
LIVE_SHAPES = [("red", "circle"), ("blue", "square"), ("green", "triangle"), ("yellow", "cross")]
NODE_TESTS = 9  # test() calls in clients/typescript/test/*.test.ts


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_typescript_client(server: LiveServer, shapes_model_dir: Path, tmp_path: Path) -> None:
    video = tmp_path / "ts-sample.mp4"
    made = run_cli("sample-video", str(video), "--shapes", "blue:square,red:circle,green:triangle", "--json")
    assert made.returncode == 0, made.output
    stream = tmp_path / "ts-live.ts"
    schedule = write_shapes_video(stream, LIVE_SHAPES, seconds_each=4.0, fps=10, codec="h264")
    pki, wrong = make_pki(tmp_path / "pki"), make_pki(tmp_path / "other-pki")
    tls = ["--tls-cert", str(pki["server_cert"]), "--tls-key", str(pki["server_key"]), "--auth-token", TOKEN]
    tls_target, mtls_target = f"localhost:{free_port()}", f"localhost:{free_port()}"
    tls_server = start_server(shapes_model_dir, tmp_path / "tls", tls_target, *tls)
    try:
        mtls_server = start_server(
            shapes_model_dir, tmp_path / "mtls", mtls_target, *tls, "--tls-client-ca", str(pki["ca"])
        )
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("MOMENTS_")}
            env.update(
                {
                    "MOMENTS_TARGET": server.target,
                    "MOMENTS_TOKEN": TOKEN,
                    "MOMENTS_SAMPLE_VIDEO": str(video),
                    "MOMENTS_SAMPLE_SCHEDULE": made.stdout,
                    "MOMENTS_LIVE_STREAM": str(stream),
                    "MOMENTS_LIVE_SCHEDULE": json.dumps(
                        [{"start_s": s.start_s, "end_s": s.end_s, "caption": s.caption} for s in schedule]
                    ),
                    # for the TLS tests only (under names connect() does not read by itself)
                    "MOMENTS_TEST_TLS_TARGET": tls_target,
                    "MOMENTS_TEST_MTLS_TARGET": mtls_target,
                    "MOMENTS_TEST_CA": str(pki["ca"]),
                    "MOMENTS_TEST_WRONG_CA": str(wrong["ca"]),
                    "MOMENTS_TEST_CLIENT_CERT": str(pki["client_cert"]),
                    "MOMENTS_TEST_CLIENT_KEY": str(pki["client_key"]),
                }
            )
            ends = server.ingest_ends()
            proc = subprocess.run(
                ["bash", str(REPO / "clients" / "typescript" / "test.sh"), "test"],
                env=env,
                capture_output=True,
                text=True,
                timeout=540,
            )
        finally:
            mtls_server.stop()
    finally:
        tls_server.stop()
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    counts = dict(re.findall(r"^# (pass|fail|skipped|cancelled) (\d+)$", proc.stdout, re.M))
    assert counts == {"pass": str(NODE_TESTS), "fail": "0", "skipped": "0", "cancelled": "0"}, output
    assert json.loads(made.stdout)[1]["caption"] == "a red circle"
    # the streams the client completed on this server ended with IngestEnd: the file, the LIVE stream, the one
    # resumed after its link dropped and the one resumed after its source failed. The two broken calls sent none,
    # and their headers set sends_end: neither was taken for complete after the settle time, however late its
    # cancellation reached the handler (each counts as "missing", or not at all when the cancellation came first)
    after = server.ingest_ends()
    assert after["marker"] == ends["marker"] + 4 and after["settle"] == ends["settle"], (ends, after)
