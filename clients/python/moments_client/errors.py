"""One exception type for every failed call: :class:`MomentsError`, carrying the gRPC status code and message."""

from __future__ import annotations

import grpc

__all__ = ["MomentsError"]


class MomentsError(Exception):
    """A Moments call failed.

    ``code`` is the :class:`grpc.StatusCode` (``NOT_FOUND``, ``INVALID_ARGUMENT``, ``UNAVAILABLE``, ...),
    ``message`` the server's (or gRPC's) explanation, ``method`` the RPC that failed (e.g. ``"Search"``).
    """

    def __init__(self, code: grpc.StatusCode, message: str, method: str = "") -> None:
        self.code = code
        self.message = message
        self.method = method
        where = f"{method}: " if method else ""
        super().__init__(f"{where}{code.name}: {message}")

    @classmethod
    def from_rpc_error(cls, error: grpc.RpcError, method: str = "") -> MomentsError:
        """Wrap a :class:`grpc.RpcError` (sync or asyncio) without losing its code and details."""
        code = getattr(error, "code", None)
        details = getattr(error, "details", None)
        status = code() if callable(code) else grpc.StatusCode.UNKNOWN
        message = details() if callable(details) else str(error)
        return cls(status if isinstance(status, grpc.StatusCode) else grpc.StatusCode.UNKNOWN, message or "", method)

    @property
    def retryable(self) -> bool:
        """True for transient failures (the server was unreachable or overloaded)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
