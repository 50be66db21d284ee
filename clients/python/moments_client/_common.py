"""What the sync and asyncio clients share: channel settings, how their methods are made, request builders,
upload sources."""

from __future__ import annotations

import inspect
import json
import os
import re
import socket
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, TypeAlias, TypeVar

import grpc

from moments.v1 import moments_pb2 as pb
from moments.v1 import moments_pb2_grpc as pb_grpc
from moments_client.types import Frame
from moments_client.values import to_value

SERVICE = "moments.v1.VideoSearch"
CHUNK_SIZE = 256 * 1024
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_INGEST_TIMEOUT_S = 3600.0
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

#: Calls that are safe to repeat: retried on UNAVAILABLE only, with exponential backoff. Ingest and
#: DeleteVideo are never retried by the channel.
IDEMPOTENT = ("Search", "Embed", "GetVideo", "ListVideos", "Info")

SERVICE_CONFIG: dict[str, Any] = {
    "methodConfig": [
        {
            "name": [{"service": SERVICE, "method": m} for m in IDEMPOTENT],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.2s",
                "maxBackoff": "3s",
                "backoffMultiplier": 2.5,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

#: A video id is 1-128 of these characters (the server's rule); check_video_id tells, the CLI's ingest makes
#: ids of file names with them.
VIDEO_ID_CHARS = "A-Za-z0-9._:-"
VIDEO_ID_MAX = 128
VIDEO_ID = re.compile(rf"^[{VIDEO_ID_CHARS}]{{1,{VIDEO_ID_MAX}}}$")

#: A FRAMES ingest's item: a Frame, or (image bytes, time in seconds).
FrameItem: TypeAlias = Frame | tuple[bytes, float]
Source: TypeAlias = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Iterable[bytes]
AsyncSource: TypeAlias = Source | AsyncIterable[bytes]
TlsArg: TypeAlias = bool | str | os.PathLike[str] | grpc.ChannelCredentials | None


def balanced_target(target: str) -> tuple[str, list[tuple[str, Any]]]:
    """Several servers, "host1:port1,host2:port2": one channel balancing its calls over all of them.

    The host names are resolved here and handed to gRPC as one address list with its round_robin policy (a
    `dns:///name:port` target balances over the addresses DNS gives, as gRPC does by itself). With TLS the
    certificate is checked against the first host's name. A single target is returned as it is."""
    parts = [p.strip() for p in target.split(",") if p.strip()]
    if len(parts) < 2:
        if target.startswith("dns:"):
            return target, [("grpc.lb_policy_name", "round_robin")]
        return target, []
    addresses: list[str] = []
    family = "ipv4"
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"{part!r} in the target list is not host:port")
        host = host.strip("[]")
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        if not infos:
            raise ValueError(f"cannot resolve {host!r}")
        fam, _, _, _, sockaddr = infos[0]
        if fam == socket.AF_INET6:
            family = "ipv6"
            addresses.append(f"[{sockaddr[0]}]:{port}")
        else:
            addresses.append(f"{sockaddr[0]}:{port}")
    first_host = parts[0].rpartition(":")[0].strip("[]")
    options: list[tuple[str, Any]] = [("grpc.lb_policy_name", "round_robin")]
    options.append(("grpc.ssl_target_name_override", first_host))
    return f"{family}:{','.join(addresses)}", options


def channel_options(extra: Sequence[tuple[str, Any]] = ()) -> list[tuple[str, Any]]:
    """Channel arguments: keepalive for long ingest streams over flaky links, retries, message sizes.

    Keepalive pings every 30 s while a call is open (the server allows pings every 10 s), and a link that does
    not answer one within 20 s is declared dead, so a stalled upload fails instead of hanging.
    """
    options: dict[str, Any] = {
        "grpc.keepalive_time_ms": 30_000,
        "grpc.keepalive_timeout_ms": 20_000,
        "grpc.keepalive_permit_without_calls": 0,
        "grpc.http2.max_pings_without_data": 0,
        "grpc.max_send_message_length": MAX_MESSAGE_BYTES,
        "grpc.max_receive_message_length": MAX_MESSAGE_BYTES,
        "grpc.enable_retries": 1,
        "grpc.service_config": json.dumps(SERVICE_CONFIG),
        "grpc.primary_user_agent": "moments-client-python/0.1",
    }
    options.update(dict(extra))
    return list(options.items())


ClientCert: TypeAlias = tuple[str | os.PathLike[str], str | os.PathLike[str]]


def credentials(tls: TlsArg, client_cert: ClientCert | None = None) -> grpc.ChannelCredentials | None:
    """None → plaintext; True → the system's roots; a path → that PEM CA bundle; or ready credentials.

    client_cert: (certificate chain PEM, private key PEM) for servers that require client certificates
    (mTLS); implies TLS (with the system's roots when `tls` names none)."""
    if isinstance(tls, grpc.ChannelCredentials):
        return tls
    if (tls is None or tls is False) and client_cert is None:
        return None
    roots = None if tls is None or isinstance(tls, bool) else Path(tls).read_bytes()
    if client_cert is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    chain, key = (Path(p).read_bytes() for p in client_cert)
    return grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)


def call_metadata(token: str | None, extra: Sequence[tuple[str, str]] = ()) -> tuple[tuple[str, str], ...]:
    md = list(extra)
    if token:
        md.append(("authorization", f"Bearer {token}"))
    return tuple(md)


F = TypeVar("F", bound=Callable[..., Any])


def method_of(spec: Callable[..., Any], method: F, returns: str) -> F:
    """``method`` (``self``, then ``spec``'s parameters) named and documented as ``spec``, with its signature:
    how Client and AsyncClient make their methods from the calls of :mod:`moments_client._calls`."""
    sig = inspect.signature(spec)
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__name__ = method.__qualname__ = spec.__name__
    method.__doc__ = spec.__doc__
    method.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[self_param, *sig.parameters.values()], return_annotation=returns
    )
    return method


class ClientBase:
    """What Client and AsyncClient share: the connection their constructor's arguments describe (see
    :class:`moments_client.Client`); each opens its own kind of channel (:meth:`_open_channel`)."""

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        token: str | None = None,
        tls: TlsArg = None,
        *,
        client_cert: ClientCert | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        ingest_timeout: float = DEFAULT_INGEST_TIMEOUT_S,
        options: Sequence[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.target = target
        self.timeout = timeout
        self.ingest_timeout = ingest_timeout
        creds = credentials(tls, client_cert)
        address, balancing = balanced_target(target)
        self._channel = self._open_channel(address, creds, channel_options([*balancing, *options]))
        self._stub = pb_grpc.VideoSearchStub(self._channel)
        self._metadata = call_metadata(token, metadata)

    def _open_channel(self, target: str, creds: grpc.ChannelCredentials | None, options: list[tuple[str, Any]]) -> Any:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------------ requests


def read_image(image: bytes | str | os.PathLike[str]) -> bytes:
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    return Path(image).read_bytes()


def embed_request(
    texts: Sequence[str] | None, images: Sequence[bytes | str | os.PathLike[str]] | None
) -> pb.EmbedRequest:
    if bool(texts) == bool(images):
        raise ValueError("embed needs texts= or images= (one of them, not empty)")
    if isinstance(texts, str):
        texts = [texts]
    return pb.EmbedRequest(texts=list(texts or []), images=[read_image(i) for i in images or []])


def check_video_id(video_id: str) -> None:
    if not VIDEO_ID.match(video_id):
        raise ValueError(f"video_id {video_id!r} must be 1-{VIDEO_ID_MAX} characters of [{VIDEO_ID_CHARS}]")


def ingest_header(
    video_id: str,
    filename: str,
    metadata: Mapping[str, Any] | None,
    fps: float,
    max_frames: int,
    replace: bool,
    thumbnails: bool,
    sha256: str | None,
    size: int | None,
    keyframes: bool = False,
    live: bool = False,
    segment_s: float = 0.0,
) -> pb.IngestHeader:
    check_video_id(video_id)
    header = pb.IngestHeader(
        video_id=video_id,
        filename=filename,
        sampling=pb.SamplingOptions(fps=fps, max_frames=max_frames, keyframes=keyframes),
        replace=replace,
        thumbnails=thumbnails,
        sha256=sha256 or "",
        size_bytes=size or 0,
        mode=pb.INGEST_MODE_LIVE if live else pb.INGEST_MODE_UNSPECIFIED,
        segment_s=segment_s,
        # every stream of this client ends with end_request() once its source has ended: one that ends without
        # it is broken, and the server never takes it for complete
        sends_end=True,
    )
    for key, value in (metadata or {}).items():
        header.metadata[key].CopyFrom(to_value(value))
    return header


def frames_header(
    video_id: str,
    filename: str,
    metadata: Mapping[str, Any] | None,
    segment_s: float,
    replace: bool,
    thumbnails: bool,
    resume_upload_id: str | None,
    resume_offset: int,
) -> pb.IngestHeader:
    header = ingest_header(video_id, filename, metadata, 0.0, 0, replace, thumbnails, None, None, segment_s=segment_s)
    header.mode = pb.INGEST_MODE_FRAMES
    header.resume_upload_id = resume_upload_id or ""
    header.resume_offset = resume_offset
    return header


def frame_request(item: FrameItem) -> pb.IngestRequest:
    if isinstance(item, Frame):
        image, time_s = item.image, item.time_s
    else:
        image, time_s = item
    if not isinstance(image, bytes | bytearray | memoryview):
        raise TypeError(f"a frame's image must be JPEG/PNG bytes, not {type(image).__name__}")
    return pb.IngestRequest(frame=pb.IngestFrame(image=bytes(image), time_s=float(time_s)))


def end_request() -> pb.IngestRequest:
    """A stream's last request once its source has ended (IngestRequest.end): the server takes the stream for
    complete by it, not by the end of the requests (which a broken call also gives)."""
    return pb.IngestRequest(end=pb.IngestEnd())


def pull_header(
    url: str,
    video_id: str,
    metadata: Mapping[str, Any] | None,
    fps: float,
    segment_s: float,
    replace: bool,
    thumbnails: bool,
    keyframes: bool,
) -> pb.IngestHeader:
    """The header of a server-side pull: the server reads `url` (rtsp://, rtsps://, http(s)://, udp://)."""
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"a pull needs a URL such as rtsp://host/path, not {url!r}")
    header = ingest_header(
        video_id, "", metadata, fps, 0, replace, thumbnails, None, None, keyframes=keyframes, segment_s=segment_s
    )
    header.source_url = url
    header.sends_end = False  # nothing follows a pull's header
    return header
