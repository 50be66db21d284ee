"""Real servers on real ports for the tests: the Moments gRPC server and the embedded store's wire listener,
each in its own process, started the way a user starts them."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.conftest import REPO


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["ADB_LOG_FILE"] = ""
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Process:
    def __init__(self, args: list[str], log: Path) -> None:
        self.log = log
        self._log_file = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, *args], cwd=REPO, env=_env(), stdout=self._log_file, stderr=subprocess.STDOUT
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig_kill: bool = False) -> None:
        if self.proc.poll() is None:
            if sig_kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


class LiveServer(Process):
    """`python -m moments_server` on a free port; waits until health says SERVING."""

    def __init__(self, model_dir: Path, store: str, workdir: Path, *extra: str) -> None:
        self.port = free_port()
        self.target = f"127.0.0.1:{self.port}"
        self.metrics_port = free_port()
        args = [
            "-m",
            "moments_server",
            "--listen",
            self.target,
            "--model-dir",
            str(model_dir),
            "--store",
            store,
            "--metrics-listen",
            f"127.0.0.1:{self.metrics_port}",
            "--log-level",
            "INFO",
            "--spool-dir",
            str(workdir),
            *extra,
        ]
        super().__init__(args, workdir / f"server-{self.port}.log")
        self.wait_serving()

    def wait_serving(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.output()}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.2)
        raise TimeoutError(f"server not SERVING after {timeout} s:\n{self.output()}")

    def ingest_ends(self) -> dict[str, int]:
        """The server's count of Ingest request streams that ended, by how (moments_ingest_ends): "marker" (the
        sender's IngestEnd), "settle" (a stream without it, taken for complete after the settle time) and "missing"
        (a stream whose header set sends_end ended without the marker: broken)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            text = r.read().decode()
        found = dict(re.findall(r'^moments_ingest_ends_total\{by="(\w+)"\} ([0-9.e+]+)$', text, re.M))
        return {by: int(float(found.get(by, "0"))) for by in ("marker", "settle", "missing")}


def start_server(model_dir: Path, workdir: Path, listen: str, *flags: str) -> Process:
    """`python -m moments_server` with any flags (TLS ones too); waits until its log says it serves."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = ["-m", "moments_server", "--listen", listen, "--model-dir", str(model_dir)]
    args += ["--store", f"embedded:{workdir / 'data'}", "--metrics-listen", "127.0.0.1:0", *flags]
    proc = Process(args, workdir / "server.log")
    deadline = time.monotonic() + 120
    while " serving shapes-demo " not in proc.output():
        assert proc.proc.poll() is None, proc.output()
        assert time.monotonic() < deadline, proc.output()
        time.sleep(0.2)
    return proc


class StoreListener(Process):
    """The embedded store's ApertureDB wire listener, for the SDK path."""

    def __init__(
        self, data_dir: Path, workdir: Path, user: str = "admin", password: str = "test-pass", port: int = 0
    ) -> None:
        self.port = port or free_port()  # a given port: restarting a listener where its clients expect it
        self.user, self.password = user, password
        args = [
            "-m",
            "moments_server.store.embedded",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-ssl",
            "--user",
            user,
            "--password",
            password,
        ]
        super().__init__(args, workdir / f"store-{self.port}.log")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"store listener exited:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"store listener not up:\n{self.output()}")

    @property
    def url(self) -> str:
        return f"aperturedb://{self.user}:{self.password}@127.0.0.1:{self.port}?ssl=0"


class Relay:
    """A TCP relay on loopback in front of the server whose connections can be cut (a dropped link)."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.target = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(self.upstream)
            with self.lock:
                self.sockets += [down, up]
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._copy, args=(a, b), daemon=True).start()

    @staticmethod
    def _copy(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Every open connection is reset; new ones are relayed again."""
        with self.lock:
            cut, self.sockets = self.sockets, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()

    def close(self) -> None:
        self.listener.close()
        self.cut()
