"""Prometheus metrics. Per-response timing fields come from the same measurements."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from moments_server.errors import ListenError

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30, 120)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

RPC_CALLS = Counter("moments_rpc_calls", "RPCs handled", ["method", "code"], registry=REGISTRY)
RPC_LATENCY = Histogram(
    "moments_rpc_latency_seconds", "RPC latency", ["method", "code"], buckets=_LATENCY_BUCKETS, registry=REGISTRY
)
BATCH_SIZE = Histogram(
    "moments_batch_size",
    "Items per inference batch, by tower and lane",
    ["tower", "lane"],
    buckets=_BATCH_BUCKETS,
    registry=REGISTRY,
)
QUEUE_TIME = Histogram(
    "moments_queue_seconds",
    "Time an item waited for its batch",
    ["tower", "lane"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
INFERENCE_TIME = Histogram(
    "moments_inference_seconds", "Session run time per batch", ["tower"], buckets=_LATENCY_BUCKETS, registry=REGISTRY
)
DROPPED = Counter("moments_batch_dropped", "Items dropped before inference", ["tower", "reason"], registry=REGISTRY)
TEXT_CACHE = Counter("moments_text_cache", "Text embedding cache lookups", ["result"], registry=REGISTRY)
INGEST_BYTES = Counter("moments_ingest_bytes", "Upload bytes received", registry=REGISTRY)
INGEST_FRAMES = Counter("moments_ingest_frames", "Frames by ingest stage", ["stage"], registry=REGISTRY)
# "marker": the sender's IngestEnd; "settle": a stream without it (an older sender), complete after the settle time;
# "missing": a stream whose header set sends_end ended without IngestEnd: broken (a dropped link, a cancelled call)
INGEST_ENDS = Counter("moments_ingest_ends", "Ingest request streams ended, by how", ["by"], registry=REGISTRY)
STORE_TIME = Histogram(
    "moments_store_query_seconds", "Store query time", ["kind"], buckets=_LATENCY_BUCKETS, registry=REGISTRY
)


def serve_metrics(listen: str, registry: CollectorRegistry | None = None) -> int | None:
    """Start the Prometheus HTTP endpoint on host:port (port 0 = disabled). Returns the port."""
    host, _, port = listen.rpartition(":")
    if int(port) == 0:
        return None
    try:
        server, _thread = start_http_server(int(port), addr=host or "127.0.0.1", registry=registry or REGISTRY)
    except OSError as e:
        raise ListenError(
            f"cannot serve metrics on {listen} (--metrics-listen; port 0 turns them off): {e.strerror or e}"
        ) from None
    return int(server.server_port)


def multiprocess_registry(directory: Path) -> CollectorRegistry:
    """The sum of what every worker wrote to `directory` (their PROMETHEUS_MULTIPROC_DIR; workers.py)."""
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))
    return registry
