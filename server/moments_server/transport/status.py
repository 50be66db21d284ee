"""Maps the core's exceptions to gRPC status codes, and records each call's code and latency."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from moments_server import metrics
from moments_server.errors import MomentsError, Overloaded

log = logging.getLogger(__name__)


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(error, MomentsError):
        return grpc.StatusCode[error.code], str(error)
    if isinstance(error, ConnectionError | TimeoutError):
        return grpc.StatusCode.UNAVAILABLE, f"the store is unreachable: {error}"
    return grpc.StatusCode.INTERNAL, f"internal error ({type(error).__name__}); the server logged the details"


def deadline_of(context: grpc.aio.ServicerContext) -> float | None:
    """The call's deadline on the perf_counter clock, for the batchers."""
    remaining = context.time_remaining()
    return None if remaining is None else time.perf_counter() + remaining


# When the server is full for now (a queue at its bound, every ingest slot taken) or the store is away, the caller is
# told when to retry (the servicer's `retry_after_ms`, config retry_after_ms): gRPC's retry pushback trailer,
# which gRPC's own retry policy (the Python client's service config retries UNAVAILABLE) honours, and which
# other callers can read.
RETRY_PUSHBACK = "grpc-retry-pushback-ms"


def rpc(method: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a servicer method (of a servicer with `retry_after_ms`): map exceptions to statuses, record
    metrics."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        async def handler(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            try:
                return await fn(self, request, context)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                raise
            except grpc.aio.AbortError:
                code = context.code() or grpc.StatusCode.UNKNOWN
                raise
            except Exception as e:
                code, message = status_of(e)
                if code == grpc.StatusCode.INTERNAL:
                    log.exception("%s failed", method)
                retry = isinstance(e, Overloaded) or code == grpc.StatusCode.UNAVAILABLE
                trailers = ((RETRY_PUSHBACK, str(self.retry_after_ms)),) if retry else ()
                await context.abort(code, message, trailers)
            finally:
                name = code.name if isinstance(code, grpc.StatusCode) else str(code)
                metrics.RPC_CALLS.labels(method, name).inc()
                metrics.RPC_LATENCY.labels(method, name).observe(time.perf_counter() - started)

        return handler

    return wrap
