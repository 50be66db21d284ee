"""The wire listener: hello and TLS, sessions and their expiry, and robustness against broken clients
(truncated frames, wrong lengths, garbage protobuf, disconnects mid-message, 64 concurrent SDK clients)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import threading
import time
from typing import Any

import pytest

from moments_server.store.embedded import Engine
from moments_server.store.embedded.protocol import decode_query, encode_query

from .conftest import PASSWORD, USER, sdk_connector


def raw(port: int, proto: int = 1) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(struct.pack("@I", 8) + struct.pack("@II", 1, proto))
    n = struct.unpack("@I", recv_exact(s, 4))[0]
    assert struct.unpack("@II", recv_exact(s, n)) == (1, proto)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def send_query(s: socket.socket, q: Any, blobs: list[bytes] | None = None, token: str = "") -> Any:
    body = encode_query(json.dumps(q), blobs or [], token)
    s.sendall(struct.pack("@I", len(body)) + body)
    n = struct.unpack("@I", recv_exact(s, 4))[0]
    js, out, _ = decode_query(recv_exact(s, n))
    return json.loads(js), out


def login(s: socket.socket) -> str:
    r, _ = send_query(s, [{"Authenticate": {"username": USER, "password": PASSWORD}}])
    return str(r[0]["Authenticate"]["session_token"])


def closed(s: socket.socket) -> bool:
    s.settimeout(5)
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True


def still_serving(port: int) -> None:
    c = sdk_connector(port)
    r, _ = c.query([{"GetStatus": {}}])
    assert r[0]["GetStatus"]["status"] == 0
    c.close()


def test_raw_protocol_roundtrip_and_auth(engine: Engine, wire: Any) -> None:
    srv = wire(engine)
    s = raw(srv.port)
    r, _ = send_query(s, [{"GetStatus": {}}])
    assert r == {"info": "Not Authenticated!", "status": -1}
    r, _ = send_query(s, [{"Authenticate": {"username": USER, "password": "wrong"}}])
    assert r[0]["Authenticate"]["status"] == -1 and "invalid username or password" in r[0]["Authenticate"]["info"]
    tok = login(s)
    r, _ = send_query(s, [{"GetStatus": {}}], token=tok)
    assert r[0]["GetStatus"]["status"] == 0
    r, _ = send_query(s, [{"GetStatus": {}}], token="adbs_forged")
    assert r == {"info": "Not Authenticated!", "status": -1}


def test_hello_rejections(engine: Engine, wire: Any) -> None:
    srv = wire(engine, ssl=False)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(struct.pack("@I", 8) + struct.pack("@II", 1, 2))  # TLS asked, not offered
    n = struct.unpack("@I", recv_exact(s, 4))[0]
    assert struct.unpack("@II", recv_exact(s, n)) == (1, 0)
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    s.sendall(struct.pack("@I", 8) + struct.pack("@II", 7, 1))  # wrong version
    n = struct.unpack("@I", recv_exact(s, 4))[0]
    assert struct.unpack("@II", recv_exact(s, n)) == (0, 0)
    assert closed(s)
    still_serving(srv.port)


def test_tls_handshake_and_query(engine: Engine, wire: Any) -> None:
    srv = wire(engine, ssl=True)
    s = raw(srv.port, proto=2)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    t = ctx.wrap_socket(s)
    tok = login(t)  # type: ignore[arg-type]
    r, _ = send_query(t, [{"GetStatus": {}}], token=tok)  # type: ignore[arg-type]
    assert r[0]["GetStatus"]["status"] == 0


@pytest.mark.parametrize(
    "attack",
    [
        "truncated_prefix",
        "truncated_body",
        "over_limit",
        "garbage_protobuf",
        "wrong_wire_type",
        "bad_utf8",
        "disconnect_mid_message",
        "bad_hello_size",
    ],
)
def test_broken_clients_are_dropped_and_the_listener_keeps_serving(engine: Engine, wire: Any, attack: str) -> None:
    srv = wire(engine, max_message_bytes=1 << 20)
    if attack == "bad_hello_size":
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
        s.sendall(struct.pack("@I", 3) + b"abc")
        assert closed(s)
        still_serving(srv.port)
        return
    s = raw(srv.port)
    tok = login(s)
    good = encode_query(json.dumps([{"GetStatus": {}}]), [], tok)
    if attack == "truncated_prefix":
        s.sendall(b"\x05\x00")
        s.shutdown(socket.SHUT_WR)
    elif attack == "truncated_body":
        s.sendall(struct.pack("@I", len(good) + 10) + good)
        s.shutdown(socket.SHUT_WR)
    elif attack == "over_limit":
        s.sendall(struct.pack("@I", 2 << 20) + b"x" * 100)
    elif attack == "garbage_protobuf":
        s.sendall(struct.pack("@I", 6) + b"\xff\xff\xff\xff\xff\xff")
    elif attack == "wrong_wire_type":
        s.sendall(struct.pack("@I", 2) + b"\x08\x01")  # field 1 as a varint
    elif attack == "bad_utf8":
        s.sendall(struct.pack("@I", 4) + b"\x0a\x02\xff\xfe")
    elif attack == "disconnect_mid_message":
        s.sendall(struct.pack("@I", 1000) + good[:10])
        s.close()
        still_serving(srv.port)
        return
    assert closed(s)
    still_serving(srv.port)


def test_invalid_json_in_a_valid_frame_is_an_error_response(engine: Engine, wire: Any) -> None:
    srv = wire(engine)
    s = raw(srv.port)
    tok = login(s)
    body = encode_query("[{", [], tok)
    s.sendall(struct.pack("@I", len(body)) + body)
    n = struct.unpack("@I", recv_exact(s, 4))[0]
    js, _, _ = decode_query(recv_exact(s, n))
    r = json.loads(js)
    assert r["status"] == -1 and "Invalid JSON" in r["info"]
    assert send_query(s, [{"GetStatus": {}}], token=tok)[0][0]["GetStatus"]["status"] == 0


def test_session_expiry_and_sdk_refresh(engine: Engine, wire: Any) -> None:
    srv = wire(engine, session_ttl_s=11, refresh_ttl_s=60)  # the SDK refreshes at ttl - 10 s
    c = sdk_connector(srv.port)
    c.query([{"GetStatus": {}}])
    first = c.shared_data.session.session_token
    time.sleep(1.2)
    r, _ = c.query([{"GetStatus": {}}])
    assert r[0]["GetStatus"]["status"] == 0
    assert c.shared_data.session.session_token != first  # refreshed through RefreshToken
    # an expired session is refused as ApertureDB refuses it
    srv.server.sessions._sessions = {k: 0.0 for k in srv.server.sessions._sessions}
    s = raw(srv.port)
    r, _ = send_query(s, [{"GetStatus": {}}], token=c.shared_data.session.session_token)
    assert r == {"info": "Not Authenticated!", "status": -1}


def test_64_concurrent_sdk_clients(engine: Engine, wire: Any) -> None:
    srv = wire(engine, ssl=True)
    engine.query([{"AddDescriptorSet": {"name": "s", "dimensions": 2, "metric": "L2"}}])
    errors: list[BaseException] = []
    barrier = threading.Barrier(64)

    def client(i: int) -> None:
        try:
            c = sdk_connector(srv.port, ssl=True)
            barrier.wait(30)
            for j in range(3):
                r, _ = c.query(
                    [
                        {"AddEntity": {"class": "C", "properties": {"i": i, "j": j}}},
                        {"AddDescriptor": {"set": "s", "properties": {"i": i}}},
                    ],
                    [struct.pack("<2f", i, j)],
                )
                assert r == [{"AddEntity": {"status": 0}}, {"AddDescriptor": {"status": 0}}], r
                r, _ = c.query(
                    [{"FindDescriptor": {"set": "s", "k_neighbors": 1, "distances": True}}], [struct.pack("<2f", i, j)]
                )
                assert r[0]["FindDescriptor"]["entities"][0]["_distance"] == 0.0
            c.close()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    r, _ = engine.query([{"FindEntity": {"with_class": "C", "results": {"count": True}}}])
    assert r[0]["FindEntity"]["count"] == 192


def test_sdk_verifies_the_self_signed_certificate(engine: Engine, wire: Any, cert_dir: Any) -> None:
    from aperturedb.Connector import Connector

    srv = wire(engine, ssl=True)
    for host in ("127.0.0.1", "localhost"):
        c = Connector(
            host=host,
            port=srv.port,
            user=USER,
            password=PASSWORD,
            use_ssl=True,
            verify_hostname=True,
            ca_cert=str(cert_dir / "cert.pem"),
        )
        r, _ = c.query([{"GetStatus": {}}])
        assert r[0]["GetStatus"]["status"] == 0
        c.close()


def test_personal_tokens_through_the_sdk(engine: Engine, wire: Any, tmp_path: Any) -> None:
    from moments_server.store.embedded.credentials import load_tokens, new_token

    token = new_token(tmp_path, USER)
    other = new_token(tmp_path, "someone-else")
    assert token.startswith("adbp_") and load_tokens(tmp_path) == {token: USER, other: "someone-else"}
    assert oct((tmp_path / "wire_tokens.json").stat().st_mode & 0o777) == "0o600"
    srv = wire(engine, tokens=load_tokens(tmp_path))
    c = sdk_connector(srv.port, password="", token=token)  # the SDK sends {"username", "token"}
    r, _ = c.query([{"GetStatus": {}}])
    assert r[0]["GetStatus"]["status"] == 0
    c.close()
    s = raw(srv.port)
    for body in (
        {"token": token[:-1] + ("0" if token[-1] != "0" else "1")},  # wrong token
        {"username": USER, "token": other},  # someone else's token
        {"token": 42},
    ):
        r, _ = send_query(s, [{"Authenticate": body}])
        assert r == [{"Authenticate": {"info": "Authentication failed: invalid token", "status": -1}}], r
    r, _ = send_query(s, [{"Authenticate": {"token": other}}])  # no username: the token's own user
    assert r[0]["Authenticate"]["status"] == 0 and r[0]["Authenticate"]["session_token"].startswith("adbs_")


def test_a_frame_before_authentication_is_never_held(engine: Engine, wire: Any) -> None:
    """Before authenticating, a connection's frame over 64 KiB is read past, not buffered (a 32 MiB frame
    would otherwise cost the listener 32 MiB), and answered Not Authenticated; after it, the full size."""
    import tracemalloc

    srv = wire(engine)
    big = encode_query(json.dumps([{"GetStatus": {}}]), [b"\0" * (32 << 20)])
    s = raw(srv.port)
    tracemalloc.start()
    try:
        s.sendall(struct.pack("@I", len(big)))
        view = memoryview(big)
        for i in range(0, len(big), 1 << 20):
            s.sendall(view[i : i + (1 << 20)])
        n = struct.unpack("@I", recv_exact(s, 4))[0]
        js, _, _ = decode_query(recv_exact(s, n))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert json.loads(js) == {"info": "Not Authenticated!", "status": -1}
    assert peak < 8 << 20, f"the listener held {peak} bytes for an unauthenticated frame"
    # The same connection, once authenticated, takes a large frame.
    token = login(s)
    r, _ = send_query(s, [{"GetStatus": {}}], [b"\0" * (1 << 20)], token=token)
    assert r != {"info": "Not Authenticated!", "status": -1}
    s.close()


def test_a_session_shared_by_a_new_connection_survives_a_large_first_query(
    engine: Engine, wire: Any, mp4: bytes
) -> None:
    """The SDK's clones share one session: a clone's first frame may be a large query with a valid token on a
    connection that has not authenticated. It is refused unread, the SDK refreshes and resends."""
    srv = wire(engine)
    first = sdk_connector(srv.port)
    assert first.query([{"GetStatus": {}}])[0][0]["GetStatus"]["status"] == 0
    clone = first.clone()
    blob = mp4 * (1 + (200 << 10) // len(mp4))
    r, _ = clone.query([{"AddBlob": {"properties": {"name": "big"}}}], [blob])
    assert r[0]["AddBlob"]["status"] == 0, r
    r, blobs = first.query([{"FindBlob": {"constraints": {"name": ["==", "big"]}, "blobs": True}}])
    assert blobs == [blob]
    first.close()
    clone.close()


def test_only_a_live_token_in_a_refused_frame_proves_a_connection(engine: Engine, wire: Any) -> None:
    """A large first frame is refused unread; a forged or absent token in it leaves the connection
    unauthenticated (its next large frame is refused too), a live one authenticates it."""
    srv = wire(engine)
    big = [b"\0" * (200 << 10)]
    refused = {"info": "Not Authenticated!", "status": -1}
    s = raw(srv.port)
    for token in ("", "adbs_" + "0" * 48, "adbs_" + "0" * 48):
        assert send_query(s, [{"GetStatus": {}}], big, token=token)[0] == refused
    live = login(raw(srv.port))  # a session of another connection, as an SDK clone holds it
    other = raw(srv.port)
    assert send_query(other, [{"GetStatus": {}}], big, token=live)[0] == refused  # read past, but proves it
    r, _ = send_query(other, [{"AddBlob": {"properties": {"name": "proved"}}}], big, token=live)
    assert r[0]["AddBlob"]["status"] == 0, r
    s.close()
    other.close()


def _all_at_once(calls: list[Any]) -> list[Any]:
    """Run the calls in threads released together; -> their results in order."""
    import threading

    start = threading.Barrier(len(calls))
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        results[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_clones_whose_large_first_queries_race_all_get_through(engine: Engine, wire: Any, mp4: bytes) -> None:
    """Several clones, each on a new connection, send a large first query at once with the shared token: one
    of them renews the shared session, the others see it renewed and only resend. Their refused frames
    carried a live token, so their connections count as authenticated and the resend is read in full (the
    workers of a multi-process server write through such clones: their uploads failed Not Authenticated)."""
    srv = wire(engine)
    first = sdk_connector(srv.port)
    assert first.query([{"GetStatus": {}}])[0][0]["GetStatus"]["status"] == 0
    blob = mp4 * (1 + (200 << 10) // len(mp4))
    for round_ in range(3):
        clones = [first.clone() for _ in range(4)]
        results = _all_at_once(
            [
                lambda c=c, n=f"race-{round_}-{i}": c.query([{"AddBlob": {"properties": {"name": n}}}], [blob])[0]
                for i, c in enumerate(clones)
            ]
        )
        assert all(isinstance(r, list) and r[0]["AddBlob"]["status"] == 0 for r in results), results
        for c in clones:
            c.close()
    found, _ = first.query([{"FindBlob": {"constraints": {"name": ["!=", "big"]}, "results": {"count": True}}}])
    assert found[0]["FindBlob"]["count"] == 12, found
    first.close()


def test_slow_and_surplus_connections_are_closed(engine: Engine, wire: Any) -> None:
    srv = wire(engine, pre_auth_timeout_s=0.5, max_connections=2)
    quiet = raw(srv.port)  # says hello, then nothing
    assert closed(quiet)
    a, b = raw(srv.port), raw(srv.port)
    extra = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    assert closed(extra)
    for s in (a, b, quiet, extra):
        s.close()
    time.sleep(0.2)
    still_serving(srv.port)
