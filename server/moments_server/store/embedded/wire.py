"""ApertureDB's TCP wire protocol in front of an `Engine` (asyncio).

    server = WireServer(engine, host="127.0.0.1", port=55555, ssl=True,
                        users={"admin": "secret"}, cert_dir=None, max_message_bytes=256 << 20,
                        session_ttl_s=36000, refresh_ttl_s=360000)
    await server.start(); server.port; await server.stop()
    ThreadedWireServer(engine, **same)        # runs one in a background thread; .port, .stop()

Per connection: the 8-byte hello (`(version, protocol)`; the reply echoes the protocol when it is
allowed, `(0, 0)` on a version mismatch), then a TLS handshake when the client asked for TLS, then
one `queryMessage` request/response at a time. `users=None` turns authentication off (any
Authenticate succeeds and tokens are not checked); otherwise queries need the session token that
`Authenticate` (username + password, or a personal `adbp_` token from `tokens`, see credentials.py)
or `RefreshToken` hands out, and are refused with
`{"info": "Not Authenticated!", "status": -1}` without one, as ApertureDB refuses them. A frame over
`max_message_bytes` or a malformed frame closes that connection with a log line; the listener
serves everyone else. With `ssl=True` and no certificate in `cert_dir`, a self-signed one is made
there at first start.

Per-connection limits: until the connection has authenticated (a successful Authenticate or RefreshToken
on it, or a query carrying a valid session token), a frame holds at most `pre_auth_max_bytes` (64 KiB);
a larger one is read past without being kept and answered "Not Authenticated!" (the SDK then refreshes
its session on that connection and resends), and each such frame must arrive within `pre_auth_timeout_s`.
At most `max_connections` connections are served at once; more are closed at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl as ssl_mod
import threading
from pathlib import Path
from typing import Any

from .. import defaults
from . import jsonio
from .engine import Engine
from .protocol import (
    HELLO,
    LEN,
    PROTOCOL_SSL,
    PROTOCOL_TCP,
    PROTOCOL_VERSION,
    ProtocolError,
    decode_query,
    encode_query,
)
from .sessions import Sessions
from .tls import ensure_self_signed

log = logging.getLogger(__name__)

NOT_AUTHENTICATED = {"info": "Not Authenticated!", "status": -1}
PRE_AUTH_MAX_BYTES = 64 << 10
_DRAIN_CHUNK = 64 << 10
_MAX_TOKEN_BYTES = 256  # session tokens are "adbs_" + 48 hex digits


class _Oversized:
    """A pre-authentication frame that was read past, not kept; `token`: the session token it carried."""

    def __init__(self, size: int, token: str = "") -> None:
        self.size = size
        self.token = token


class _Skimmer:
    """Reads a queryMessage of `n` bytes off the stream field by field, keeping only its token (field 3,
    which the SDK writes after the blobs): the json and blobs are read past in chunks."""

    def __init__(self, reader: asyncio.StreamReader, n: int) -> None:
        self.reader, self.size, self.left = reader, n, n

    async def skip(self, count: int) -> None:
        if count > self.left:
            raise ValueError("a field runs past the frame")
        while count:
            chunk = await self.reader.read(min(count, _DRAIN_CHUNK))
            if not chunk:
                raise ProtocolError(f"connection closed after {self.size - self.left} of {self.size} bytes")
            count -= len(chunk)
            self.left -= len(chunk)

    async def _varint(self) -> int:
        value = 0
        for shift in range(0, 64, 7):
            if not self.left:
                raise ValueError("a varint runs past the frame")
            byte = (await self.reader.readexactly(1))[0]
            self.left -= 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
        raise ValueError("a varint of more than 10 bytes")

    async def token(self) -> str:
        """The token, or "" when the frame has none or is malformed (the rest is skipped by the caller)."""
        try:
            token = ""
            while self.left:
                tag = await self._varint()
                field, wire_type = tag >> 3, tag & 7
                if wire_type == 0:
                    await self._varint()
                elif wire_type in (1, 5):
                    await self.skip(8 if wire_type == 1 else 4)
                elif wire_type != 2:
                    return ""
                else:
                    length = await self._varint()
                    if field == 3 and length <= min(_MAX_TOKEN_BYTES, self.left):
                        raw = await self.reader.readexactly(length)
                        self.left -= length
                        token = raw.decode("utf-8", "replace")
                    else:
                        await self.skip(length)
            return token
        except (ValueError, asyncio.IncompleteReadError):
            return ""


class WireServer:
    def __init__(
        self,
        engine: Engine,
        host: str = "127.0.0.1",
        port: int = 55555,
        *,
        ssl: bool = True,
        users: dict[str, str] | None = None,
        tokens: dict[str, str] | None = None,
        cert_dir: str | Path | None = None,
        max_message_bytes: int = 256 << 20,
        session_ttl_s: int = 36000,
        refresh_ttl_s: int = 360000,
        pre_auth_max_bytes: int = PRE_AUTH_MAX_BYTES,
        pre_auth_timeout_s: float = defaults.WIRE_PRE_AUTH_TIMEOUT_S,
        max_connections: int = defaults.WIRE_MAX_CONNECTIONS,
    ) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.max_message_bytes = max_message_bytes
        self.pre_auth_max_bytes = min(pre_auth_max_bytes, max_message_bytes)
        self.pre_auth_timeout_s = pre_auth_timeout_s
        self.max_connections = max_connections
        self.sessions = Sessions(users, session_ttl_s, refresh_ttl_s, tokens)
        self._ssl_ctx: ssl_mod.SSLContext | None = None
        if ssl:
            cdir = Path(cert_dir) if cert_dir is not None else engine.data_dir / "tls"
            cert, key = ensure_self_signed(cdir)
            ctx = ssl_mod.SSLContext(ssl_mod.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self._ssl_ctx = ctx
        self._server: asyncio.base_events.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info(
            "ApertureDB wire listener on %s:%d (%s)",
            self.host,
            self.port,
            "TLS or TCP" if self._ssl_ctx else "TCP only",
        )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._conns):
                t.cancel()
            await asyncio.gather(*self._conns, return_exceptions=True)
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _read_frame(self, reader: asyncio.StreamReader, authenticated: bool = True) -> bytes | _Oversized | None:
        """One frame; before authentication within pre_auth_timeout_s, and one over pre_auth_max_bytes is
        read past (never held in memory) and comes back as _Oversized."""
        if not authenticated:
            try:
                return await asyncio.wait_for(self._read_pre_auth(reader), self.pre_auth_timeout_s)
            except TimeoutError:
                raise ProtocolError(
                    f"no complete frame within {self.pre_auth_timeout_s:.0f} s before authentication"
                ) from None
        n = await self._read_length(reader)
        return None if n is None else await self._read_body(reader, n)

    async def _read_length(self, reader: asyncio.StreamReader) -> int | None:
        """A frame's length prefix, at most max_message_bytes; None where the peer closed between frames."""
        try:
            head = await reader.readexactly(LEN.size)
        except asyncio.IncompleteReadError as e:
            if e.partial:
                raise ProtocolError("truncated length prefix") from None
            return None
        (n,) = LEN.unpack(head)
        if n > self.max_message_bytes:
            raise ProtocolError(f"message of {n} bytes is over the limit of {self.max_message_bytes}")
        return int(n)

    async def _read_body(self, reader: asyncio.StreamReader, n: int) -> bytes:
        try:
            return await reader.readexactly(n)
        except asyncio.IncompleteReadError as e:
            raise ProtocolError(f"connection closed after {len(e.partial)} of {n} bytes") from None

    async def _read_hello(self, reader: asyncio.StreamReader) -> bytes | None:
        try:
            n = await asyncio.wait_for(self._read_length(reader), self.pre_auth_timeout_s)
        except TimeoutError:
            raise ProtocolError(f"no hello within {self.pre_auth_timeout_s:.0f} s") from None
        if n is None:
            return None
        if n != HELLO.size:
            raise ProtocolError(f"hello of {n} bytes")
        try:
            return await asyncio.wait_for(self._read_body(reader, n), self.pre_auth_timeout_s)
        except TimeoutError:
            raise ProtocolError(f"no hello within {self.pre_auth_timeout_s:.0f} s") from None

    async def _read_pre_auth(self, reader: asyncio.StreamReader) -> bytes | _Oversized | None:
        n = await self._read_length(reader)
        if n is None:
            return None
        if n <= self.pre_auth_max_bytes:
            return await self._read_body(reader, n)
        body = _Skimmer(reader, n)
        token = await body.token()
        await body.skip(body.left)
        return _Oversized(n, token)

    @staticmethod
    async def _write_frame(writer: asyncio.StreamWriter, body: bytes) -> None:
        writer.write(LEN.pack(len(body)) + body)
        await writer.drain()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        peer = writer.get_extra_info("peername")
        if len(self._conns) >= self.max_connections:
            log.warning("wire: refusing %s: %d connections are open (the limit)", peer, len(self._conns))
            writer.transport.abort()
            return
        self._conns.add(task)
        authenticated = self.sessions.users is None
        try:
            hello = await self._read_hello(reader)
            if hello is None:
                return
            version, proto = HELLO.unpack(hello)
            allowed = PROTOCOL_TCP | (PROTOCOL_SSL if self._ssl_ctx else 0)
            if version != PROTOCOL_VERSION:
                await self._write_frame(writer, HELLO.pack(0, 0))
                raise ProtocolError(f"protocol version {version}")
            chosen = PROTOCOL_SSL if proto & PROTOCOL_SSL & allowed else (proto & PROTOCOL_TCP)
            await self._write_frame(writer, HELLO.pack(PROTOCOL_VERSION, chosen))
            if not chosen:
                return
            if chosen == PROTOCOL_SSL:
                assert self._ssl_ctx is not None
                await writer.start_tls(self._ssl_ctx)
            while True:
                frame = await self._read_frame(reader, authenticated)
                if frame is None:
                    return
                if isinstance(frame, _Oversized):
                    # Refused unread either way. A live session token in it (an SDK clone's first query on a
                    # new connection) proves the connection: the SDK renews and resends, and that is read in
                    # full. Its clones may find the shared session renewed by another and only resend.
                    authenticated = bool(frame.token) and self.sessions.valid(frame.token)
                    log.info(
                        "wire: %s sent %d bytes before authenticating; refused unread (%s)",
                        peer,
                        frame.size,
                        "a live session: authenticated" if authenticated else "no live session",
                    )
                    await self._write_frame(writer, encode_query(jsonio.dumps(NOT_AUTHENTICATED), []))
                    continue
                js, blobs, token = decode_query(frame)
                resp, out_blobs, ok = await self._answer(js, blobs, token)
                authenticated = authenticated or ok
                await self._write_frame(writer, encode_query(jsonio.dumps(resp), out_blobs))
        except ProtocolError as e:
            log.warning("wire: closing connection from %s: %s", peer, e)
        except (ConnectionError, ssl_mod.SSLError, asyncio.IncompleteReadError, OSError) as e:
            log.info("wire: connection from %s ended: %s", peer, e)
        except asyncio.CancelledError:
            # stop(): drop the connection without a TLS close exchange the peer may never answer
            writer.transport.abort()
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _answer(self, js: str, blobs: list[bytes], token: str) -> tuple[Any, list[bytes], bool]:
        """-> (response, blobs, whether the connection has now proved who it is)."""
        try:
            q = jsonio.loads(js)
        except ValueError as e:
            return {"info": f"Invalid JSON: {e}", "status": -1}, [], False
        if isinstance(q, list) and len(q) == 1 and isinstance(q[0], dict) and len(q[0]) == 1:
            name = next(iter(q[0]))
            if name in ("Authenticate", "RefreshToken"):
                body = q[0][name]
                answer = self.sessions.authenticate(body) if name == "Authenticate" else self.sessions.refresh(body)
                return [{name: answer}], [], answer.get("status") == 0
        if not self.sessions.valid(token):
            return dict(NOT_AUTHENTICATED), [], False
        response, out_blobs = await asyncio.to_thread(self.engine.query, q, blobs)
        return response, out_blobs, True


class ThreadedWireServer:
    """A WireServer on its own event loop in a daemon thread (tests, tools)."""

    def __init__(self, engine: Engine, host: str = "127.0.0.1", port: int = 0, **kw: Any) -> None:
        self.server = WireServer(engine, host, port, **kw)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="adb-wire", daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)

    @property
    def port(self) -> int:
        return self.server.port

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        self._loop.close()

    def __enter__(self) -> ThreadedWireServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
