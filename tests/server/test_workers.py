"""Several server processes on one port (`--workers`, workers.py): the launcher owns the embedded store, each
worker reads through its own replica and writes through the owner; a stray second server cannot join."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import grpc
import psutil

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from tests.live import REPO, LiveServer, _env, free_port
from tests.server.conftest import ingest


def channels(target: str, n: int) -> list[grpc.Channel]:
    # a connection each (gRPC otherwise shares one between channels to the same target)
    return [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(n)]


def workers_of(server: LiveServer) -> list[psutil.Process]:
    return [p for p in psutil.Process(server.proc.pid).children() if "moments_server" in " ".join(p.cmdline())]


def wait_workers_serving(server: LiveServer, n: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while server.output().count(" serving ") < n:
        assert server.proc.poll() is None, server.output()
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.3)


def search_ids(stub: pb_grpc.VideoSearchStub, text: str) -> set[str]:
    reply = stub.Search(pb.SearchRequest(text=text, top_k=20), timeout=30)
    return {m.video_id for m in reply.moments}


def test_workers_share_the_port_and_the_store(shapes_model_dir: Path, video_files: dict, tmp_path: Path) -> None:
    server = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'data'}", tmp_path, "--workers", "2")
    chans = channels(server.target, 16)
    try:
        wait_workers_serving(server, 2)
        workers = workers_of(server)
        assert len(workers) == 2
        stubs = [pb_grpc.VideoSearchStub(c) for c in chans]
        path, _ = video_files["cam-north"]
        events = ingest(stubs[0], path, "cam-north")  # written by the owner, through one worker
        assert events[-1].WhichOneof("event") == "done", events
        # every connection sees it at once, whichever worker (and replica) answers it
        for stub in stubs:
            assert search_ids(stub, "a red circle") == {"cam-north"}
        # the kernel spread the connections over both workers
        port = int(server.target.rsplit(":", 1)[1])
        per_worker = [
            sum(1 for c in w.net_connections("tcp") if c.laddr and c.laddr.port == port and c.status == "ESTABLISHED")
            for w in workers
        ]
        assert all(n > 0 for n in per_worker) and sum(per_worker) >= 16, per_worker
        # a delete through one worker is seen by all
        stubs[1].DeleteVideo(pb.DeleteVideoRequest(video_id="cam-north"), timeout=30)
        for stub in stubs:
            assert search_ids(stub, "a red circle") == set()
        # the launcher serves the workers' metrics summed: every Search above is counted once
        with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        searches = sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("moments_rpc_calls_total{") and 'method="Search"' in line
        )
        assert searches == 32, searches
        # SIGTERM: the workers stop gracefully, then the launcher
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0, server.output()
        assert not any(w.is_running() and w.status() != psutil.STATUS_ZOMBIE for w in workers)
    finally:
        for c in chans:
            c.close()
        server.stop()


def test_a_second_server_on_the_same_port_is_refused(shapes_model_dir: Path, tmp_path: Path) -> None:
    first = LiveServer(shapes_model_dir, f"embedded:{tmp_path / 'a'}", tmp_path)
    try:
        for workers in ("1", "2"):
            second = subprocess.run(
                [sys.executable, "-m", "moments_server", "--listen", first.target, "--workers", workers,
                 "--model-dir", str(shapes_model_dir), "--store", f"embedded:{tmp_path / ('b' + workers)}",
                 "--metrics-listen", f"127.0.0.1:{free_port()}"],
                cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert second.returncode == 2, second.stderr[-2000:]
            assert f"cannot listen on {first.target} (--listen)" in second.stderr
            assert "Traceback" not in second.stderr
        # a metrics port in use is named with its flag, in one line
        busy = subprocess.run(
            [sys.executable, "-m", "moments_server", "--listen", f"127.0.0.1:{free_port()}",
             "--model-dir", str(shapes_model_dir), "--store", f"embedded:{tmp_path / 'c'}",
             "--metrics-listen", f"127.0.0.1:{first.metrics_port}"],
            cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert busy.returncode == 2 and "(--metrics-listen" in busy.stderr and "Traceback" not in busy.stderr
        # and the first server still answers alone
        with grpc.insecure_channel(first.target) as ch:
            assert pb_grpc.VideoSearchStub(ch).Info(pb.InfoRequest(), timeout=10).model.name
    finally:
        first.stop()
