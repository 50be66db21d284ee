"""open_connector: the embedded engine in-process and the real SDK over TCP/TLS, both from threads."""

from __future__ import annotations

import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from moments_server.store import Connector, open_connector
from moments_server.store.embedded import Engine
from tests.conftest import REPO

from .conftest import PASSWORD, USER

SEED = [{"AddDescriptorSet": {"name": "s", "dimensions": 2, "metric": "CS"}}]


def exercise(conn: Connector) -> None:
    assert isinstance(conn, Connector)
    r, _ = conn.query(SEED)
    assert r[0]["AddDescriptorSet"]["status"] in (0, 2)

    def work(i: int) -> Any:
        r, _ = conn.query(
            [
                {"AddEntity": {"class": "T", "_ref": 1, "properties": {"i": i}}},
                {"AddDescriptor": {"set": "s", "properties": {"i": i}, "connect": {"ref": 1, "class": "has"}}},
            ],
            [struct.pack("<2f", 1, i)],
        )
        assert r == [{"AddEntity": {"status": 0}}, {"AddDescriptor": {"status": 0}}], r
        r, _ = conn.query(
            [
                {"FindDescriptor": {"set": "s", "k_neighbors": 1, "_ref": 1, "distances": True}},
                {"FindEntity": {"is_connected_to": {"ref": 1}, "results": {"list": ["i"]}}},
            ],
            [struct.pack("<2f", 1, i)],
        )
        return r

    with ThreadPoolExecutor(8) as ex:
        out = list(ex.map(work, range(40)))
    assert all(r[0]["FindDescriptor"]["returned"] == 1 for r in out)
    r, _ = conn.query([{"FindEntity": {"with_class": "T", "results": {"count": True}}}])
    assert r[0]["FindEntity"]["count"] == 40
    r, blobs = conn.query([{"FindDescriptor": {"set": "nope", "k_neighbors": 1}}], [b"\0" * 8])
    assert r["status"] == -1 and blobs == []


def test_embedded_url(tmp_path: Path) -> None:
    conn = open_connector(f"embedded:{tmp_path / 'data'}")
    exercise(conn)
    conn.close()
    conn = open_connector(f"embedded:{tmp_path / 'data'}")  # reopens the same data
    r, _ = conn.query([{"FindEntity": {"with_class": "T", "results": {"count": True}}}])
    assert r[0]["FindEntity"]["count"] == 40
    conn.close()


@pytest.mark.parametrize("ssl", [0, 1])
def test_aperturedb_url(engine: Engine, wire: Any, ssl: int) -> None:
    srv = wire(engine, ssl=bool(ssl))
    conn = open_connector(f"aperturedb://{USER}:{PASSWORD}@127.0.0.1:{srv.port}?ssl={ssl}")
    exercise(conn)
    conn.close()


def test_aperturedb_url_survives_a_listener_restart(engine: Engine, wire: Any) -> None:
    srv = wire(engine)
    port = srv.port
    conn = open_connector(f"aperturedb://{USER}:{PASSWORD}@127.0.0.1:{port}?ssl=0")
    assert conn.query([{"GetStatus": {}}])[0][0]["GetStatus"]["status"] == 0
    srv.stop()
    from moments_server.store.embedded import ThreadedWireServer

    srv2 = ThreadedWireServer(engine, port=port, ssl=False, users={USER: PASSWORD})
    try:
        # the SDK reconnects and, the sessions being new, logs in again
        assert conn.query([{"GetStatus": {}}])[0][0]["GetStatus"]["status"] == 0
    finally:
        srv2.stop()
        conn.close()


@pytest.mark.parametrize("url", ["mysql://x", "embedded:", "aperturedb://u:p@h:1?ssl=2", "aperturedb:///x"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        open_connector(url)


def test_sdk_connector_skips_the_version_check(engine: Engine, wire: Any) -> None:
    """open_connector("aperturedb://...") skips the SDK package's PyPI version check (it imports requests and
    calls PyPI, which an offline host waits on), yet queries the store."""
    import subprocess
    import sys

    srv = wire(engine)
    code = (
        "import sys\n"
        "from moments_server.store import open_connector\n"
        f"c = open_connector('aperturedb://{USER}:{PASSWORD}@127.0.0.1:{srv.port}?ssl=0')\n"
        "r, _ = c.query([{'GetStatus': {}}]); assert r[0]['GetStatus']['status'] == 0\n"
        "assert 'requests' not in sys.modules, 'the version check ran'\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "server")},
    )
    assert out.returncode == 0, out.stderr
