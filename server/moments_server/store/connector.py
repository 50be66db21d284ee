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

    open_connector(url, options=StoreOptions()) -> Connector
        "embedded:./data"                                   in-process Engine on that data dir
        "aperturedb://user:pass@host:port[?ssl=0|1]"        the real SDK (a small reconnecting pool)
    open_connector("embedded:./data", writer=URL)           a read replica of that dir (reads in-process,
                                                            writes to its owner at URL; workers.py)

StoreOptions: how the engine and the SDK pool are opened; the server builds them from its Settings
(core.store_options).

Both are thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qs, unquote, urlsplit

from . import defaults
from .file_blob import FileBlob

if TYPE_CHECKING:
    from .embedded import Engine


@dataclass(frozen=True)
class StoreOptions:
    """How open_connector opens a store (the server's come from config.Settings: core.store_options)."""

    omp_threads: int | None = defaults.OMP_THREADS  # None: OpenMP's default
    deferred_index: bool = defaults.DEFERRED_INDEX
    read_cache_rows: int = defaults.READ_CACHE_ROWS  # 0: off
    pool_size: int = defaults.SDK_POOL_SIZE
    full_import: bool = False  # import the aperturedb package's __init__ too (see aperturedb_sdk)

    def engine(self, data_dir: str | Path, replica: bool = False) -> Engine:
        """The embedded engine on data_dir with these options (a read replica with replica=True)."""
        from .embedded import Engine

        return Engine(
            data_dir,
            omp_threads=self.omp_threads,
            deferred_index=self.deferred_index,
            read_cache_rows=self.read_cache_rows,
            replica=replica,
        )


@runtime_checkable
class QueryRunner(Protocol):
    """What the catalog needs: ApertureDB queries (an Engine itself is one)."""

    def query(
        self, commands: list[dict[str, Any]], blobs: Sequence[bytes | FileBlob] = ()
    ) -> tuple[Any, list[bytes]]: ...

    def close(self) -> None: ...


@runtime_checkable
class Connector(QueryRunner, Protocol):
    """A store the server runs on, and what it is."""

    kind: str
    remote: bool

    def local_engine(self) -> Engine | None: ...


class EmbeddedConnector:
    """The embedded engine, in-process."""

    kind = "embedded"
    remote = False

    def __init__(self, data_dir: str, options: StoreOptions) -> None:
        self.engine = options.engine(data_dir)

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

    def __init__(self, data_dir: str, writer_url: str, options: StoreOptions) -> None:
        self.writer = open_connector(writer_url, options=options)
        self.engine = options.engine(data_dir, replica=True)

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


def open_connector(url: str, writer: str = "", options: StoreOptions | None = None) -> Connector:
    options = options or StoreOptions()
    if url.startswith("embedded:"):
        path = url[len("embedded:") :]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("embedded store URL needs a data directory: embedded:./data")
        return ReplicaConnector(path, writer, options) if writer else EmbeddedConnector(path, options)
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
            pool_size=options.pool_size,
            full_import=options.full_import,
        )
    raise ValueError(f"unknown store URL {url!r} (expected embedded:DIR or aperturedb://user:pass@host:port)")
