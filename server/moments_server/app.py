"""Builds the server from Settings and runs it: the core (core.py: model, store, services), then gRPC, health last.

Health is NOT_SERVING until the sessions are warm and the store has answered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from moments.v1 import moments_pb2, moments_pb2_grpc
from moments_server import metrics
from moments_server.config import Settings
from moments_server.core import Core, open_core
from moments_server.errors import ListenError
from moments_server.store.embedded import Engine, WireServer
from moments_server.store.embedded.credentials import load_tokens, load_users
from moments_server.store.watch import StoreWatch
from moments_server.transport.auth import TokenAuth
from moments_server.transport.reflection import enable_reflection
from moments_server.transport.servicer import VideoSearchServicer
from moments_server.transport.tls import server_credentials

log = logging.getLogger(__name__)


SERVICE = moments_pb2.DESCRIPTOR.services_by_name["VideoSearch"].full_name


@dataclass
class Running:
    server: grpc.aio.Server
    port: int
    metrics_port: int | None
    core: Core
    health: HealthServicer
    wire: WireServer | None = None
    store_watch: StoreWatch | None = None
    housekeeping: asyncio.Task | None = None


async def start(settings: Settings) -> Running:
    creds = server_credentials(settings)  # a TLS or listen setting that cannot work fails before anything starts
    metrics_port = metrics.serve_metrics(settings.metrics_listen)  # and a metrics port in use, cleanly
    core = await open_core(settings)
    worker = settings.worker_index >= 0
    interceptors = [TokenAuth(settings.auth_token)] if settings.auth_token else []
    limit = settings.max_message_bytes
    server = grpc.aio.server(
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
            ("grpc.http2.min_ping_interval_without_data_ms", settings.min_ping_interval_ms),
            ("grpc.keepalive_permit_without_calls", 1),
            # Workers of one launcher share the port on purpose (the kernel spreads connections over
            # them); a server alone must not share it with a stray second one (gRPC's default is to).
            ("grpc.so_reuseport", 1 if worker else 0),
        ],
    )
    health = HealthServicer()
    await health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    await health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    enable_reflection((SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), server)
    servicer = VideoSearchServicer(core.ingest, core.search, core.videos, settings)
    moments_pb2_grpc.add_VideoSearchServicer_to_server(servicer, server)

    try:
        port = server.add_secure_port(settings.listen, creds) if creds else server.add_insecure_port(settings.listen)
    except RuntimeError:  # grpc: "Failed to bind to address"
        port = 0
    if port == 0:
        raise ListenError(
            f"cannot listen on {settings.listen} (--listen): the address is in use (another server?) or invalid"
        )
    if not worker:  # a worker takes connections only once warm: until then its siblings serve them
        await server.start()
    wire = None
    if settings.store_listen:
        engine = core.connector.local_engine()
        if engine is None:
            raise ValueError("--store-listen serves an in-process embedded store; it cannot front this one")
        wire = await start_wire_listener(settings, engine)

    # Warm-up and the store check run while health says NOT_SERVING.
    await core.prepare()
    if worker:
        await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await health.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving %s (%s, %s, %s graphs) on %s port %d, store %s, metrics port %s, %s event loop",
        core.manifest.name,
        core.embedder.provider,
        core.embedder.precision,
        "fused" if core.embedder.fused else "unfused",
        settings.listen,
        port,
        settings.store,
        metrics_port,
        type(asyncio.get_running_loop()).__module__.split(".")[0],
    )
    watch = None
    if core.connector.remote:  # a store in another process can go away; health follows it

        async def set_serving(ok: bool) -> None:
            status = health_pb2.HealthCheckResponse.SERVING if ok else health_pb2.HealthCheckResponse.NOT_SERVING
            await health.set("", status)
            await health.set(SERVICE, status)

        watch = StoreWatch(
            core.connector, core.executor, set_serving, settings.store_probe_every_s, settings.store_probe_timeout_s
        )
        watch.start()
    housekeeping = asyncio.create_task(core.ingest.housekeeping())
    return Running(server, port, metrics_port, core, health, wire, watch, housekeeping)


async def start_wire_listener(settings: Settings, engine: Engine) -> WireServer | None:
    """The embedded store's ApertureDB wire listener (--store-listen), for other processes and tools."""
    if not settings.store_listen:
        return None
    host, _, port = settings.store_listen.rpartition(":")
    data_dir = engine.data_dir
    users = load_users(data_dir, settings.store_listen_user or None, settings.store_listen_password or None)
    wire = WireServer(
        engine,
        host or "127.0.0.1",
        int(port),
        users=users,
        tokens=load_tokens(data_dir),
        pre_auth_timeout_s=settings.store_listen_pre_auth_timeout_s,
        max_connections=settings.store_listen_max_connections,
    )
    await wire.start()
    return wire


async def stop(running: Running, grace_s: float) -> None:
    if running.housekeeping is not None:
        running.housekeeping.cancel()
    if running.store_watch is not None:
        await running.store_watch.stop()
    await running.health.enter_graceful_shutdown()
    await running.core.ingest.close()  # pulls have no end of their own: they stop now, "interrupted"
    await running.server.stop(grace_s)
    if running.wire is not None:
        await running.wire.stop()
    await running.core.close()


async def serve(settings: Settings) -> None:
    running = await start(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("shutting down: finishing in-flight calls for up to %.0f s", settings.grace_s)
    await stop(running, settings.grace_s)
