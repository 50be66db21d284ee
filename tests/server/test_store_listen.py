"""`--store-listen`: the server's embedded store served over ApertureDB's wire protocol beside gRPC, with
credentials from the store dir (made at first start, the password printed once) and personal tokens."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from moments_server.store.embedded.credentials import load_users, new_token
from tests.live import LiveServer, free_port


def connector(port: int, **kw: Any) -> Any:
    from aperturedb.Connector import Connector

    kw.setdefault("retry_interval_seconds", 0)
    return Connector(host="127.0.0.1", port=port, use_ssl=True, verify_hostname=False, **kw)


def test_store_listen_needs_the_generated_password_or_a_token(shapes_model_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    token = new_token(data, "admin")  # made before the start: the listener reads tokens at start
    port = free_port()
    server = LiveServer(shapes_model_dir, f"embedded:{data}", tmp_path, "--store-listen", f"127.0.0.1:{port}")
    try:
        m = re.search(r"Created wire user 'admin' with password: (\S+)", server.output())
        assert m, server.output()[-2000:]
        assert load_users(data, None, None) == {"admin": m.group(1)}
        c = connector(port, user="admin", password=m.group(1))
        r, _ = c.query(
            [{"AddEntity": {"class": "Probe"}}, {"FindEntity": {"with_class": "Probe", "results": {"count": True}}}]
        )
        assert r[1]["FindEntity"]["count"] == 1
        c.close()
        t = connector(port, user="admin", password="", token=token)
        r, _ = t.query([{"FindEntity": {"with_class": "Probe", "results": {"count": True}}}])
        assert r[0]["FindEntity"]["count"] == 1
        t.close()
        for bad in ({"password": "wrong"}, {"password": "", "token": token[:-1] + "x"}):
            with pytest.raises(Exception, match="invalid"):
                connector(port, user="admin", retry_max_attempts=1, **bad).query([{"GetStatus": {}}])
    finally:
        server.stop()
    assert server.output().count("Created wire user") == 1
