"""The one interface Moments runs its ApertureDB queries on.

    class Connector(Protocol):
        def query(self, commands: list[dict], blobs: Sequence[bytes | FileBlob] = ()) -> tuple[Any, list[bytes]]
            # (response_json, response_blobs) exactly as ApertureDB returns them: a list of
            # per-command results on success, a dict {"status": -1, "info": ...} on error; a FileBlob
            # (a spooled upload) is copied file to file by the in-process engine, read by the others
        def close(self) -> None
        kind: str       # "embedded" or "aperturedb" (what Info reports)
        remote: bool    # another process serves it and can go away: health follows it (store/watch.py)
        def local_engine(self) -> Engine | None   # the in-process engine a wire listener can front

    open_connector(url) -> Connector
        "embedded:./data"                                   in-process Engine on that data dir
        "aperturedb://user:pass@host:port[?ssl=0|1]"        the real SDK (a small reconnecting pool)
    open_connector("embedded:./data", writer=URL)           a read replica of that dir (reads in-process,
                                                            writes to its owner at URL; workers.py)

Both are thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from .embedded.blobs import FileBlob

if TYPE_CHECKING:
    from .embedded import Engine


@runtime_checkable
class Connector(Protocol):
    def query(
        self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = ()
    ) -> tuple[Any, list[bytes]]: ...

    def close(self) -> None: ...

    kind: str
    remote: bool

    def local_engine(self) -> Engine | None: ...


class EmbeddedConnector:
    """The embedded engine, in-process."""

    kind = "embedded"
    remote = False

    def __init__(self, data_dir: str) -> None:
        from .embedded import Engine

        self.engine = Engine(data_dir)

    def query(self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = ()) -> tuple[Any, list[bytes]]:
        return self.engine.query(commands, blobs)

    def close(self) -> None:
        self.engine.close()

    def local_engine(self) -> Engine | None:
        return self.engine


class ReplicaConnector:
    """A read replica of an embedded store that another process owns (store/embedded/replica.py): reads
    run on it in-process, writes go to the owner (its wire listener)."""

    kind = "embedded"
    remote = False  # the owner is the launcher of this worker: when it goes, so does the worker

    def __init__(self, data_dir: str, writer_url: str) -> None:
        from .embedded import Engine

        self.writer = open_connector(writer_url)
        self.engine = Engine(data_dir, replica=True)

    def query(self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = ()) -> tuple[Any, list[bytes]]:
        from .embedded.commands import READ_ONLY

        names = [next(iter(c), "") for c in commands] if isinstance(commands, list) else []
        if names and all(isinstance(c, dict) and len(c) == 1 for c in commands) and not set(names) - READ_ONLY:
            return self.engine.query(commands, blobs)
        # writes, and whatever is malformed (the owner words the error)
        return self.writer.query(commands, blobs)

    def close(self) -> None:
        self.engine.close()
        self.writer.close()

    def local_engine(self) -> Engine | None:
        return None  # a replica cannot take writes: only its owner can front the store


def open_connector(url: str, writer: str = "") -> Connector:
    if url.startswith("embedded:"):
        path = url[len("embedded:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("embedded store URL needs a data directory: embedded:./data")
        return ReplicaConnector(path, writer) if writer else EmbeddedConnector(path)
    if url.startswith("aperturedb://"):
        u = urlsplit(url)
        if not u.hostname:
            raise ValueError(f"ApertureDB URL needs a host: {url!r}")
        qs = parse_qs(u.query)
        ssl_flag = qs.get("ssl", ["1"])[-1]
        if ssl_flag not in ("0", "1"):
            raise ValueError(f"ssl must be 0 or 1 in {url!r}")
        from .aperturedb_sdk import SDKConnector

        return SDKConnector(
            host=u.hostname,
            port=u.port or 55555,
            user=unquote(u.username or "admin"),
            password=unquote(u.password or ""),
            use_ssl=ssl_flag == "1",
            verify_hostname=qs.get("verify", ["0"])[-1] == "1",
            ca_cert=qs.get("ca_cert", [None])[-1],
        )
    raise ValueError(f"unknown store URL {url!r} (expected embedded:DIR or aperturedb://user:pass@host:port)")
