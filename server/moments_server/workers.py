"""Several server processes on one host: `python -m moments_server --workers N` (0 = one per two cores).

One Python process answers searches on about one core (the GIL): measured on 2 cores under 64 clients,
the server ran at 1.2 cores busy with the store query, gRPC and the event loop all on one interpreter.
So the launcher (this module) starts N worker processes, each a whole server (gRPC, onnxruntime
sessions with cores/N threads, the batchers) on the same port: the workers bind it with SO_REUSEPORT
and the kernel spreads connections over them (a worker binds only once warm). The launcher checks
first that nothing else holds the port, so a stray second server fails instead of splitting traffic.

The embedded store keeps one writer: the launcher opens it (the owner) and serves it on a loopback
wire listener with a one-time password; each worker reads through its own read replica of the same
data dir (store/embedded/replica.py: in-process SQLite reads, its own FAISS copy, the owner's change
log) and sends writes to the owner, exactly as replicas reach a real ApertureDB. With an
`aperturedb://` store every worker simply connects to it.

Metrics: the workers write Prometheus samples to a shared directory (prometheus_client's multiprocess
mode) and the launcher serves their sum on --metrics-listen. Health: each worker serves gRPC health on
the shared port. SIGTERM/SIGINT: the launcher passes it on, waits for the workers' graceful stop
(--grace-s), then closes the store. A worker that dies is started again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from moments_server.config import FRAMES_ROOM_BYTES, Settings
from moments_server.errors import ListenError

log = logging.getLogger(__name__)

OWNER_USER = "moments-owner"


def auto_workers(cores: int | None = None) -> int:
    """One worker per two cores: each is bound by its own GIL to about one core, and leaves about as much to
    its decoder and onnxruntime threads. Measured on 2 cores, quiet (bench figures 10 and 11, --workers 1,2,
    2026-12-07, trimmed text ids): 2 workers serve shapes-demo searches faster (64 clients: 2,129 against
    1,468 QPS), but ViT-B-32 searches no faster (322 against 343 QPS) and ingest slower (4 streams of 720p:
    17.2 against 23.1 video-s/s, the two processes' sessions and decoders contending for the cores), so a
    2-core host serves from one process; a 16-core host from 8."""
    return max(1, (cores or os.cpu_count() or 1) // 2)


def check_port_free(listen: str) -> None:
    """Refuse a port that something already listens on (without SO_REUSEPORT this bind fails then)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError as e:
            raise ListenError(
                f"cannot listen on {listen} (--listen): {e.strerror or e}; is another server running on it?"
            ) from None


def _embedded_dir(store: str) -> str | None:
    if not store.startswith("embedded:"):
        return None
    path = store[len("embedded:") :]
    return path[2:] if path.startswith("//") else path


class Launcher:
    def __init__(self, settings: Settings, argv: list[str]) -> None:
        self.settings = settings
        self.argv = argv
        self.count = settings.workers or auto_workers()
        self.procs: dict[int, subprocess.Popen[bytes]] = {}
        self.stopping = False
        self.metrics_dir = Path(tempfile.mkdtemp(prefix="moments-metrics-"))

    def worker_args(self, index: int) -> list[str]:
        threads = self.settings.intra_op_threads or max(1, (os.cpu_count() or 1) // self.count)
        # flags given last win (argparse): each worker serves alone on nothing but the shared port
        return [
            sys.executable,
            "-m",
            "moments_server",
            *self.argv,
            "--workers",
            "1",
            "--worker-index",
            str(index),
            "--metrics-listen",
            "127.0.0.1:0",
            "--store-listen",
            "",
            "--intra-op-threads",
            str(threads),
        ]

    def spawn(self, index: int, env: dict[str, str]) -> None:
        self.procs[index] = subprocess.Popen(self.worker_args(index), env=env)
        log.info("worker %d started (pid %d)", index, self.procs[index].pid)

    async def run(self) -> None:
        from moments_server import metrics
        from moments_server.app import start_wire_listener
        from moments_server.core import store_options
        from moments_server.transport.tls import server_credentials

        s = self.settings
        server_credentials(s)  # TLS and plaintext rules: refused here rather than in every worker
        check_port_free(s.listen)
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(self.metrics_dir))
        owner = wire = public_wire = None
        data_dir = _embedded_dir(s.store)
        loop = asyncio.get_running_loop()
        if data_dir is not None:
            from moments_server.catalog.catalog import Catalog
            from moments_server.store.embedded import WireServer

            owner = await loop.run_in_executor(None, store_options(s).engine, data_dir)
            # streams "live" in the store died with the previous server: interrupted before any worker streams
            await loop.run_in_executor(None, Catalog(owner, "", 0, {}).interrupt_live_streams)
            password = secrets.token_urlsafe(24)
            # an ingest is one transaction with its video: the owner takes the largest upload in one frame
            wire = WireServer(
                owner,
                "127.0.0.1",
                0,
                ssl=False,
                users={OWNER_USER: password},
                max_message_bytes=s.max_upload_bytes + FRAMES_ROOM_BYTES,
            )
            await wire.start()
            env["MOMENTS_STORE_WRITER"] = f"aperturedb://{OWNER_USER}:{password}@127.0.0.1:{wire.port}?ssl=0"
            public_wire = await start_wire_listener(s, owner)
        metrics_port = metrics.serve_metrics(s.metrics_listen, metrics.multiprocess_registry(self.metrics_dir))
        log.info("starting %d workers on %s (metrics port %s, store %s)", self.count, s.listen, metrics_port, s.store)
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for i in range(self.count):
            self.spawn(i, env)
        try:
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                for i, p in list(self.procs.items()):
                    code = p.poll()
                    if code is not None and not stop.is_set():
                        log.error("worker %d (pid %d) exited with %s; starting it again", i, p.pid, code)
                        await asyncio.sleep(s.worker_restart_backoff_s)
                        self.spawn(i, env)
        finally:
            log.info("shutting down %d workers (grace %.0f s)", len(self.procs), s.grace_s)
            await loop.run_in_executor(None, self.stop_workers)
            for w in (public_wire, wire):
                if w is not None:
                    await w.stop()
            if owner is not None:
                await loop.run_in_executor(None, owner.close)
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def stop_workers(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.grace_s + 10
        for p in self.procs.values():
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker pid %d did not stop in time; killing it", p.pid)
                p.kill()
                p.wait()


def serve_workers(settings: Settings, argv: list[str]) -> None:
    asyncio.run(Launcher(settings, argv).run())
