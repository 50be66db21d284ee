"""Fixtures for the embedded-store tests: engines, wire listeners, SDK connectors, a real MP4."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("ADB_LOG_FILE", "")  # the SDK: no log file (and its import stays quiet)

from moments_server.store.embedded import Engine, ThreadedWireServer
from tests.conftest import REPO

CASES_DIR = REPO.parent / "shared" / "aperturedb" / "cases"
USER, PASSWORD = "admin", "admin-test-pw"


def make_mp4(frames: int = 60, fps: int = 30, size: tuple[int, int] = (64, 48)) -> bytes:
    import av
    import numpy as np

    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        s = c.add_stream("mpeg4", rate=fps)
        s.width, s.height = size
        s.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 4) % 256, dtype=np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return buf.getvalue()


@pytest.fixture(scope="session")
def mp4() -> bytes:
    return make_mp4()


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    e = Engine(tmp_path / "db")
    yield e
    e.close()


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tls")


@pytest.fixture
def wire(cert_dir: Path) -> Iterator[Callable[..., ThreadedWireServer]]:
    """wire(engine, ssl=False, users={...}) -> a running listener, stopped at teardown."""
    started: list[ThreadedWireServer] = []

    def start(engine: Engine, ssl: bool = False, users: dict[str, str] | None = None, **kw: Any) -> ThreadedWireServer:
        srv = ThreadedWireServer(
            engine, port=0, ssl=ssl, cert_dir=cert_dir, users={USER: PASSWORD} if users is None else users, **kw
        )
        started.append(srv)
        return srv

    yield start
    for s in started:
        s.stop()


def sdk_connector(port: int, ssl: bool = False, **kw: Any) -> Any:
    from aperturedb.Connector import Connector

    kw.setdefault("user", USER)
    kw.setdefault("password", PASSWORD)
    kw.setdefault("retry_interval_seconds", 0)
    return Connector(host="127.0.0.1", port=port, use_ssl=ssl, verify_hostname=False, **kw)
