"""Python client for the Moments video search server: :class:`Client` (sync), :class:`AsyncClient` (asyncio),
typed results, and :class:`MomentsError` for every failed call. The ``moments`` command is :mod:`moments_client.cli`.
"""

from moments_client.aio import AsyncClient
from moments_client.client import Client
from moments_client.errors import MomentsError
from moments_client.types import (
    Embeddings,
    Frame,
    Info,
    IngestAccepted,
    IngestCommitted,
    IngestDone,
    IngestEvent,
    IngestProgress,
    IngestPull,
    IngestTimings,
    Limits,
    MetaValue,
    ModelInfo,
    Moment,
    SearchResult,
    Timing,
    Video,
    VideoPage,
    Where,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "Client",
    "Embeddings",
    "Frame",
    "Info",
    "IngestAccepted",
    "IngestCommitted",
    "IngestDone",
    "IngestEvent",
    "IngestProgress",
    "IngestPull",
    "IngestTimings",
    "Limits",
    "MetaValue",
    "ModelInfo",
    "Moment",
    "MomentsError",
    "SearchResult",
    "Timing",
    "Video",
    "VideoPage",
    "Where",
]
