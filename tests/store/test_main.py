"""`python -m moments_server.store.embedded`: the standalone listener, its first-start credentials and TLS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

from .conftest import sdk_connector


def test_standalone_listener(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO / "server"))
    made = subprocess.run(
        [sys.executable, "-m", "moments_server.store.embedded", "--data-dir", str(tmp_path), "--new-token", "admin"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    token = made.stdout.strip()
    assert token.startswith("adbp_") and json.loads((tmp_path / "wire_tokens.json").read_text()) == {token: "admin"}
    p = subprocess.Popen(
        [sys.executable, "-m", "moments_server.store.embedded", "--data-dir", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert p.stdout is not None
        first = p.stdout.readline()
        assert first.startswith("Created wire user 'admin' with password: ")
        password = first.split(": ")[1].split()[0]
        assert json.loads((tmp_path / "wire_users.json").read_text()) == {"admin": password}
        port = int(p.stdout.readline().rsplit(":", 1)[1])
        c = sdk_connector(port, ssl=True, password=password)
        r, _ = c.query([{"AddEntity": {"class": "X"}}, {"FindEntity": {"with_class": "X", "results": {"count": True}}}])
        assert r[1]["FindEntity"]["count"] == 1
        c.close()
        t = sdk_connector(port, ssl=True, password="", token=token)
        r, _ = t.query([{"FindEntity": {"with_class": "X", "results": {"count": True}}}])
        assert r[0]["FindEntity"]["count"] == 1
        t.close()
        bad = sdk_connector(port, ssl=True, password="wrong", retry_max_attempts=1)
        try:
            bad.query([{"GetStatus": {}}])
            raise AssertionError("a wrong password was accepted")
        except Exception as e:  # the SDK raises the server's refusal
            assert "invalid username or password" in str(e)
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    assert (tmp_path / "tls" / "cert.pem").exists()
