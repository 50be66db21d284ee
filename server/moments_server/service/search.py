"""Search: embed the query through the search lane, kNN in one store transaction, then moments and paging.

Pages are slices of one ranking computed from the top each time (the token holds the offset): the kNN
goes deeper (doubling, up to max_page_depth * search_overfetch frames per query vector) until no frame it left
out could rank among the moments up to the page's end, so pages neither overlap nor skip a moment.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from concurrent.futures import Executor
from functools import partial

import numpy as np

from moments.v1 import moments_pb2 as pb
from moments_server.catalog.catalog import Catalog, Hit
from moments_server.config import Settings
from moments_server.errors import InvalidArgument, ResourceExhausted
from moments_server.inference.batcher import Expired
from moments_server.inference.embedder import Embedded, Embedder
from moments_server.service import compose
from moments_server.service.filters import build_constraints
from moments_server.service.moments import DEFAULT_MERGE_TOLERANCE, to_moments
from moments_server.service.sizing import fit
from moments_server.service.values import fill_metadata

# Merging and grouping fold several frames into one moment: fetch more frames than moments asked for.


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
        top_k = request.top_k or self.settings.default_top_k
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
        relative = options.relative_score if options.HasField("relative_score") else None
        if relative is not None and not 0.0 <= relative <= 2.0:
            raise InvalidArgument("options.relative_score is a distance below the best score: between 0 and 2")
        tolerance = options.merge_tolerance if options.HasField("merge_tolerance") else DEFAULT_MERGE_TOLERANCE
        if not 0.0 <= tolerance <= 2.0:
            raise InvalidArgument("options.merge_tolerance must be between 0 and 2")
        if options.group_by_video and options.max_per_video not in (0, 1):
            raise InvalidArgument(
                f"group_by_video is max_per_video = 1, and max_per_video is {options.max_per_video}: set one of them"
            )
        per_video = 1 if options.group_by_video else options.max_per_video
        span = options.moment_span
        if span not in (pb.MOMENT_SPAN_UNSPECIFIED, pb.MOMENT_SPAN_WINDOW, pb.MOMENT_SPAN_SHOT):
            raise InvalidArgument(f"options.moment_span {span} is unknown: UNSPECIFIED (0), WINDOW (1) or SHOT (2)")
        shots = span == pb.MOMENT_SPAN_SHOT
        query = compose.plan(request, self.settings)
        loop = asyncio.get_running_loop()
        known = self.catalog.metadata_types()
        unknown = [c.key for c in request.filters.conditions if c.key not in known]
        if unknown:  # another replica may have stored the key: the store's key registry says
            known = await loop.run_in_executor(self.executor, lambda: self.catalog.metadata_types(unknown))
        constraints = build_constraints(
            request.filters,
            known,
            max_video_ids=self.settings.max_filter_video_ids,
            max_conditions=self.settings.max_filter_conditions,
        )

        texts, images = await self._embed(query, deadline)
        vectors, negatives = query.vectors(texts.vectors, images.vectors, self.embedder.dim)

        wanted = offset + top_k + 1
        folding = options.merge_adjacent or per_video > 0 or shots
        cap = self.settings.max_page_depth * self.settings.search_overfetch
        k = min(wanted * self.settings.search_overfetch, cap) if folding else wanted
        store_s = 0.0
        while True:
            store_started = time.perf_counter()
            if deadline is not None and store_started >= deadline:  # nobody waits for the answer any more
                raise Expired("the deadline passed before the store query; the search was not run")
            thumbs, with_vectors = options.include_thumbnails, len(negatives) > 0
            find = partial(self.catalog.search_many, vectors, k, constraints, thumbs, with_vectors)
            per_query = await loop.run_in_executor(self.executor, find)
            store_s += time.perf_counter() - store_started
            hits = compose.combine(per_query, negatives, query.negative_weight, query.negative_margin)
            floor = _floor(hits, min_score, relative)
            moments = to_moments(hits, floor, options.merge_adjacent, False, tolerance, per_video, shots)
            # Done when no frame left out of the kNN could change the moments up to `wanted`: it would score
            # at most `bound`. A plain query is done at once (its wanted-th hit is the bound).
            bound = compose.unseen_bound(per_query, k)
            if bound is None or k >= cap or (floor is not None and bound < floor):
                break
            if len(moments) >= wanted and moments[wanted - 1].score >= bound:
                break
            k = min(k * 2, cap)
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
        response.timing.queue_ms = max(texts.queue_s, images.queue_s) * 1e3
        response.timing.inference_ms = max(texts.inference_s, images.inference_s) * 1e3
        response.timing.store_ms = store_s * 1e3
        response.timing.total_ms = (time.perf_counter() - started) * 1e3
        return response

    async def _embed(self, query: compose.Plan, deadline: float | None) -> tuple[Embedded, Embedded]:
        """The query's texts and images, each kind in one batch, both at once."""
        none = Embedded(np.zeros((0, self.embedder.dim), np.float32), 0.0, 0.0)
        texts, images = query.texts, query.images
        if texts and images:
            both = await asyncio.gather(
                self.embedder.embed_texts(texts, deadline=deadline), self.embedder.embed_images(images, deadline)
            )
            return both[0], both[1]
        if texts:
            return await self.embedder.embed_texts(texts, deadline=deadline), none
        return none, await self.embedder.embed_images(images, deadline)


def _floor(hits: list[Hit], min_score: float | None, relative: float | None) -> float | None:
    """The lowest score kept: min_score, and within `relative` of the best hit of the whole result."""
    floors = [] if min_score is None else [min_score]
    if relative is not None and hits:
        floors.append(max(h.score for h in hits) - relative)
    return max(floors) if floors else None
