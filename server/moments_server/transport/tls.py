"""TLS for the gRPC listener: a certificate and key from config, client certificates for mTLS, and the
rule that plaintext is served on loopback only unless explicitly allowed."""

from __future__ import annotations

import ipaddress
import logging

import grpc

from moments_server.config import Settings
from moments_server.errors import ListenError

log = logging.getLogger(__name__)


def is_loopback(listen: str) -> bool:
    host = listen.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name, 0.0.0.0, [::]: reachable from elsewhere


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The listener's TLS credentials, or None for plaintext (refused off loopback unless allowed)."""
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise ListenError("TLS needs both --tls-cert and --tls-key")
    if not settings.tls_cert or not settings.tls_key:
        if settings.tls_client_ca:
            raise ListenError("--tls-client-ca (mTLS) needs --tls-cert and --tls-key")
        if not is_loopback(settings.listen):
            if not settings.allow_insecure:
                raise ListenError(
                    f"refusing to serve plaintext on {settings.listen} (--listen), which is reachable from other "
                    "hosts: give --tls-cert and --tls-key, or --allow-insecure if something in front terminates TLS"
                )
            log.warning(
                "!!! serving PLAINTEXT gRPC on %s (--allow-insecure): tokens and videos cross the network "
                "unencrypted !!!",
                settings.listen,
            )
        return None
    try:
        key, cert = settings.tls_key.read_bytes(), settings.tls_cert.read_bytes()
        client_ca = settings.tls_client_ca.read_bytes() if settings.tls_client_ca else None
    except OSError as e:
        raise ListenError(f"cannot read a TLS file: {e}") from None
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=bool(client_ca))
