"""The embedded store's ApertureDB wire listener, over real sockets: random hellos, frames and lengths
(lying, huge, truncated), and random queries after authenticating. Each connection is answered or closed
within a bound (never left hanging), and the listener keeps serving a well-behaved client after each."""

from __future__ import annotations

import errno
import json
import socket
import struct

from hypothesis import given
from hypothesis import strategies as st

from moments_server.store.embedded.protocol import (
    HELLO,
    LEN,
    PROTOCOL_TCP,
    PROTOCOL_VERSION,
    decode_query,
    encode_query,
)
from tests.fuzz.conftest import budget, record
from tests.live import StoreListener

TIMEOUT_S = 10.0


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _read_frame(s: socket.socket) -> bytes | None:
    head = _recv_exact(s, LEN.size)
    if head is None:
        return None
    (n,) = LEN.unpack(head)
    return _recv_exact(s, n)


def _frame(body: bytes) -> bytes:
    return LEN.pack(len(body)) + body


def _hello(s: socket.socket) -> None:
    s.sendall(_frame(HELLO.pack(PROTOCOL_VERSION, PROTOCOL_TCP)))
    reply = _read_frame(s)
    assert reply is not None and HELLO.unpack(reply) == (PROTOCOL_VERSION, PROTOCOL_TCP)


def _query(s: socket.socket, q: object, token: str = "") -> object:
    s.sendall(_frame(encode_query(json.dumps(q), [], token)))
    reply = _read_frame(s)
    assert reply is not None, "the listener closed the connection instead of answering"
    js, _, _ = decode_query(reply)
    return json.loads(js)


def _session(listener: StoreListener) -> tuple[socket.socket, str]:
    s = socket.create_connection(("127.0.0.1", listener.port), timeout=TIMEOUT_S)
    _hello(s)
    auth = {"Authenticate": {"username": listener.user, "password": listener.password}}
    r = _query(s, [auth])
    assert isinstance(r, list)
    return s, r[0]["Authenticate"]["session_token"]


def assert_listener_serves(listener: StoreListener) -> None:
    s, token = _session(listener)
    with s:
        r = _query(s, [{"GetStatus": {}}], token)
        assert isinstance(r, list) and r[0]["GetStatus"]["status"] == 0, r


def _drain(s: socket.socket) -> str:
    """'answered' when the listener sent something back, 'closed' when it closed without a word; a
    connection left open past TIMEOUT_S after our side finished sending fails the test."""
    got = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return "answered" if got else "closed"
            got += chunk
    except ConnectionResetError:
        return "answered" if got else "closed (reset)"
    except TimeoutError:
        raise AssertionError(f"connection neither answered nor closed in {TIMEOUT_S} s ({len(got)} bytes)") from None


@st.composite
def raw_frames(draw: st.DrawFn) -> list[bytes]:
    """Pieces sent one after another: a hello (valid or not), then frames whose length prefixes may lie."""
    out = []
    if draw(st.booleans()):
        out.append(_frame(HELLO.pack(PROTOCOL_VERSION, draw(st.sampled_from([1, 2, 3, 0, 255])))))
    else:
        out.append(draw(st.binary(max_size=16)))
    for _ in range(draw(st.integers(0, 3))):
        body = draw(st.binary(max_size=256))
        length = draw(
            st.one_of(st.just(len(body)), st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1]))
        )
        out.append(LEN.pack(length) + body)
    return out


@budget(quick=60, fuzz=2000)
@given(pieces=raw_frames())
def test_random_frames_are_answered_or_closed(wire_listener: StoreListener, pieces: list[bytes]) -> None:
    with socket.create_connection(("127.0.0.1", wire_listener.port), timeout=TIMEOUT_S) as s:
        try:
            for p in pieces:
                s.sendall(p)
            s.shutdown(socket.SHUT_WR)  # no more from us: a lying length prefix must not leave it waiting
            outcome = _drain(s)
        except (BrokenPipeError, ConnectionResetError):
            outcome = "closed (reset)"
        except OSError as e:
            if e.errno != errno.ENOTCONN:  # it had closed before we finished sending
                raise
            outcome = "closed"
    record("wire framing", outcome)
    assert_listener_serves(wire_listener)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
COMMANDS = st.sampled_from(
    [
        "FindEntity",
        "AddEntity",
        "FindDescriptor",
        "AddDescriptorSet",
        "FindBlob",
        "UpdateEntity",
        "DeleteEntity",
        "FindConnection",
        "AddConnection",
        "FindDescriptorSet",
        "GetStatus",
        "FindClip",
        "Bogus",
    ]
)
BODIES = st.dictionaries(
    st.sampled_from(
        [
            "with_class",
            "constraints",
            "results",
            "properties",
            "_ref",
            "set",
            "k_neighbors",
            "blobs",
            "is_connected_to",
            "limit",
            "unique",
            "name",
            "dimensions",
            "engine",
            "metric",
            "class",
        ]
    ),
    JSON_VALUES,
    max_size=5,
)


@budget(quick=60, fuzz=2000)
@given(query=st.one_of(st.lists(st.dictionaries(COMMANDS, BODIES, min_size=1, max_size=1), max_size=4), JSON_VALUES))
def test_random_queries_after_authenticating_are_answered(wire_listener: StoreListener, query: object) -> None:
    s, token = _session(wire_listener)
    with s:
        try:
            reply = _query(s, query, token)
        except AssertionError:
            record("wire queries", "closed without an answer")
            raise
    status = "list" if isinstance(reply, list) else f"status {reply.get('status')}"  # type: ignore[union-attr]
    record("wire queries", f"answered ({status})")


def test_oversized_frame_before_authentication_closes(wire_listener: StoreListener) -> None:
    with socket.create_connection(("127.0.0.1", wire_listener.port), timeout=TIMEOUT_S) as s:
        _hello(s)
        s.sendall(struct.pack("@I", 2**32 - 1) + b"x" * 1024)
        s.shutdown(socket.SHUT_WR)
        _drain(s)  # closed, or refused with an answer; not left waiting for 4 GiB
    assert_listener_serves(wire_listener)
