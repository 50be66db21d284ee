"""Search: embed the query through the search lane, one store transaction, then moments and paging."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from concurrent.futures import Executor

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.catalog import Catalog
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, ResourceExhausted
from moments_server.inference.batcher import Expired
from moments_server.inference.embedder import Embedder
from moments_server.inference.preprocess import check_image
from moments_server.service.filters import build_constraints
from moments_server.service.moments import DEFAULT_MERGE_TOLERANCE, to_moments
from moments_server.service.sizing import fit
from moments_server.service.values import fill_metadata

DEFAULT_TOP_K = 10
# Merging and grouping fold several frames into one moment: fetch more frames than moments asked for.
OVERFETCH = 4


def _fingerprint(request: pb.SearchRequest) -> str:
    copy = pb.SearchRequest()
    copy.CopyFrom(request)
    copy.ClearField("page_token")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


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


class SearchService:
    def __init__(self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor

    async def search(self, request: pb.SearchRequest, deadline: float | None) -> pb.SearchResponse:
        started = time.perf_counter()
        top_k = request.top_k or DEFAULT_TOP_K
        if top_k > self.settings.max_top_k:
            raise InvalidArgument(f"top_k is {request.top_k}; it must be between 1 and {self.settings.max_top_k}")
        fingerprint = _fingerprint(request)
        offset = decode_page_token(request.page_token, fingerprint) if request.page_token else 0
        if offset + top_k > self.settings.max_page_depth:
            raise InvalidArgument(f"results are served to a depth of {self.settings.max_page_depth}; refine the query")
        options = request.options
        min_score = options.min_score if options.HasField("min_score") else None
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise InvalidArgument("options.min_score is a cosine similarity: between -1 and 1")
        tolerance = options.merge_tolerance if options.HasField("merge_tolerance") else DEFAULT_MERGE_TOLERANCE
        if not 0.0 <= tolerance <= 2.0:
            raise InvalidArgument("options.merge_tolerance must be between 0 and 2")
        loop = asyncio.get_running_loop()
        known = self.catalog.metadata_types()
        unknown = [c.key for c in request.filters.conditions if c.key not in known]
        if unknown:  # another replica may have stored the key: the store's key registry says
            known = await loop.run_in_executor(self.executor, lambda: self.catalog.metadata_types(unknown))
        constraints = build_constraints(request.filters, known)

        kind = request.WhichOneof("query")
        if kind == "text":
            if not request.text.strip():
                raise InvalidArgument("the text query is empty")
            if len(request.text) > self.settings.max_query_chars:
                raise InvalidArgument(
                    f"the text query has {len(request.text)} characters; at most {self.settings.max_query_chars}"
                )
            embedded = await self.embedder.embed_texts([request.text], deadline=deadline)
        elif kind == "image":
            check_image(request.image, self.settings.max_image_bytes, self.settings.max_image_pixels, "the query image")
            embedded = await self.embedder.embed_images([request.image], deadline=deadline)
        else:
            raise InvalidArgument("the request needs a query: set text or image")

        wanted = offset + top_k + 1
        folding = options.merge_adjacent or options.group_by_video
        k = min(wanted * OVERFETCH, self.settings.max_page_depth * OVERFETCH) if folding else wanted
        store_started = time.perf_counter()
        if deadline is not None and store_started >= deadline:  # nobody waits for the answer any more
            raise Expired("the deadline passed before the store query; the search was not run")
        hits = await loop.run_in_executor(
            self.executor,
            lambda: self.catalog.search(embedded.vectors[0], k, constraints, options.include_thumbnails),
        )
        store_s = time.perf_counter() - store_started
        moments = to_moments(hits, min_score, options.merge_adjacent, options.group_by_video, tolerance)
        page = moments[offset : offset + top_k]
        response = pb.SearchResponse()
        for m in page:
            out = response.moments.add(
                video_id=m.video_id, start_s=m.start_s, end_s=m.end_s, best_frame_s=m.best_frame_s, score=m.score
            )
            fill_metadata(out.metadata, m.metadata)
            if m.thumbnail:
                out.thumbnail_jpeg = m.thumbnail
        kept = fit(response, "moments", self.settings.max_response_bytes)
        if page and kept == 0:
            raise ResourceExhausted(
                f"one moment alone is over the server's response limit ({self.settings.max_response_bytes} bytes); "
                "search without include_thumbnails, or ask the operator about the video's metadata"
            )
        if kept < len(page):
            response.trimmed = True
            response.next_page_token = encode_page_token(offset + kept, fingerprint)
        elif len(moments) > offset + top_k:
            response.next_page_token = encode_page_token(offset + top_k, fingerprint)
        response.timing.queue_ms = embedded.queue_s * 1e3
        response.timing.inference_ms = embedded.inference_s * 1e3
        response.timing.store_ms = store_s * 1e3
        response.timing.total_ms = (time.perf_counter() - started) * 1e3
        return response
