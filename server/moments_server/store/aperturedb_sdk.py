"""The `aperturedb` SDK as a Connector: a small pool of SDK connections used from threads.

The SDK is an optional extra (`pip install moments[aperturedb]`), imported only here, and without
its package __init__ (a PyPI version check and log handlers; see `_import_connector`). The SDK's Connector reconnects
by itself (and re-authenticates); a connector whose query raised is dropped from the pool and
replaced by a clone sharing the session.

Query URL options: `ssl=0|1` (default 1), `verify=0|1` (check the server certificate and host name;
default 0, since the embedded listener's certificate is self-signed), `ca_cert=PATH`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import queue
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

from ..errors import StoreUnavailable
from . import defaults
from .file_blob import FileBlob, in_memory


def _import_connector(full_import: bool = False) -> Any:
    """The SDK's Connector class, without running the `aperturedb` package's __init__.

    That __init__ makes a PyPI version check (1 s timeout: a slow start offline) and installs log
    handlers; Connector needs none of it. When nothing imported `aperturedb` yet, its modules are
    loaded under a bare package object instead (full_import imports it normally: the server's
    --adb-full-import, MOMENTS_ADB_FULL_IMPORT=1)."""
    os.environ.setdefault("ADB_LOG_FILE", "")
    if "aperturedb" not in sys.modules and not full_import:
        spec = importlib.util.find_spec("aperturedb")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("the aperturedb SDK is not installed: pip install 'moments[aperturedb]'")
        pkg = types.ModuleType("aperturedb")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__version__ = importlib.metadata.version("aperturedb")  # type: ignore[attr-defined]
        sys.modules["aperturedb"] = pkg
    from aperturedb.Connector import Connector

    return Connector


class SDKConnector:
    """A real ApertureDB server (or another process's embedded store) through the SDK."""

    kind = "aperturedb"
    remote = True

    def local_engine(self) -> None:
        return None

    def __init__(
        self,
        host: str,
        port: int,
        user: str,
        password: str,
        *,
        use_ssl: bool = True,
        verify_hostname: bool = False,
        ca_cert: str | None = None,
        pool_size: int = defaults.SDK_POOL_SIZE,
        full_import: bool = False,
    ) -> None:
        connector_cls = _import_connector(full_import)
        self._first = connector_cls(
            host=host,
            port=port,
            user=user,
            password=password,
            use_ssl=use_ssl,
            verify_hostname=verify_hostname,
            ca_cert=ca_cert,
        )
        self._where = f"{host}:{port}"
        self._pool: queue.LifoQueue[Any] = queue.LifoQueue()
        self._pool.put(self._first)
        self._made = 1
        self.pool_size = pool_size
        self._lock = threading.Lock()
        self._all: list[Any] = [self._first]
        self._closed = False

    def _get(self) -> Any:
        try:
            return self._pool.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._made < self.pool_size:
                self._made += 1
                c = self._first.clone()  # shares the session (tokens) with the others
                self._all.append(c)
                return c
        return self._pool.get()

    def query(self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = ()) -> tuple[Any, list[bytes]]:
        if self._closed:
            raise RuntimeError("connector is closed")
        c = self._get()
        ok = False
        try:
            resp, out = c.query(commands, in_memory(blobs))
            ok = True
            return resp, list(out)
        except (TypeError, ValueError, KeyError):
            raise  # a query the SDK cannot encode: our bug, INTERNAL
        except Exception as e:
            # The SDK answers query errors in the response; what it raises is the connection or the session
            # failing (a bare Exception once its reconnect attempts are spent, while connecting or renewing).
            first = str(e).strip().splitlines()[0].strip() if str(e).strip() else type(e).__name__
            raise StoreUnavailable(f"ApertureDB at {self._where} does not answer ({first}); retry later") from e
        finally:
            if ok:
                self._pool.put(c)
            else:
                c.close()
                with self._lock:
                    fresh = self._first.clone()
                    self._all.append(fresh)
                self._pool.put(fresh)

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for c in self._all:
                with contextlib.suppress(Exception):
                    c.close()
            self._all.clear()
