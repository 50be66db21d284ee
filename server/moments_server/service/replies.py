"""What the core answers, in its own types: the transport turns each into its protobuf response, sized to
the server's response limit (a page it trims goes on from `token_after(kept)`)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

import numpy as np

from moments_server.catalog.model import VideoRecord
from moments_server.errors import InvalidArgument
from moments_server.service.moments import Moment


@dataclass
class Timing:
    queue_ms: float = 0.0
    inference_ms: float = 0.0
    store_ms: float = 0.0
    total_ms: float = 0.0


def encode_page_token(offset: int, fingerprint: str) -> str:
    raw = json.dumps({"o": offset, "f": fingerprint}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str, fingerprint: str) -> int:
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, fp = int(raw["o"]), str(raw["f"])
    except (ValueError, KeyError, TypeError) as e:
        raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response") from e
    if fp != fingerprint:
        raise InvalidArgument(
            "page_token belongs to a different query; keep every other field of the request unchanged"
        )
    if offset < 0:
        raise InvalidArgument("page_token is malformed")
    return offset


@dataclass
class SearchPage:
    """A page of ranked moments: those at offset.. of the query's one ranking."""

    moments: list[Moment]
    offset: int
    more: bool  # moments rank after this page
    fingerprint: str  # the query's, bound into its page tokens
    timing: Timing

    def token_after(self, kept: int) -> str:
        """The token of the page that starts after this page's first `kept` moments."""
        return encode_page_token(self.offset + kept, self.fingerprint)


def encode_list_token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def decode_list_token(token: str) -> int:
    try:
        offset = int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError as e:
        raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response") from e
    if offset < 0:
        raise InvalidArgument("page_token is malformed; pass next_page_token from a previous response")
    return offset


@dataclass
class VideoPage:
    videos: list[VideoRecord]
    offset: int
    more: bool

    def token_after(self, kept: int) -> str:
        return encode_list_token(self.offset + kept)


@dataclass
class Embeddings:
    vectors: np.ndarray  # (n, dimensions) float32, L2-normalised
    dimensions: int
    model: str
    timing: Timing


@dataclass
class ModelDescription:
    name: str
    pretrained: str
    dimensions: int
    image_size: int
    context_length: int
    precision: str
    provider: str
    fingerprint: str
    fused: bool
    text_buckets: list[int]  # warmed batch sizes after autotune (the last is the max batch)
    image_buckets: list[int]
    cuda_graphs: bool


@dataclass
class ServerInfo:
    model: ModelDescription
    descriptor_set: str
    store: str
    limits: dict[str, int | float]  # named as Info's Limits fields
    version: str
