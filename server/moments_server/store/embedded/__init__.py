"""The embedded store: ApertureDB's query language in-process and over ApertureDB's wire protocol.

    from moments_server.store.embedded import Engine, WireServer, ThreadedWireServer

    engine = Engine(data_dir)                              # thread-safe
    response, blobs = engine.query(commands, blobs)        # exactly as ApertureDB answers
    engine.close()

    server = WireServer(engine, host="127.0.0.1", port=55555, ssl=True, users={"admin": "pw"},
                        cert_dir=None)                     # asyncio; port=0 picks a free port
    await server.start(); server.port; await server.stop()

    with ThreadedWireServer(engine, port=0, ssl=False, users=None) as srv:   # for tests
        srv.port

`python -m moments_server.store.embedded --data-dir DIR --host 127.0.0.1 --port 55555 [--no-ssl]
[--user U --password P]` runs the listener standalone.
"""

from .engine import Engine
from .errors import QueryError
from .wire import ThreadedWireServer, WireServer

__all__ = ["Engine", "QueryError", "ThreadedWireServer", "WireServer"]
