"""Search: embed the query through the search lane, kNN in one store transaction, then moments and paging.

Pages are slices of one ranking computed from the top each time (the token holds the offset): the kNN
goes deeper (doubling, up to max_page_depth * search_overfetch frames per query vector) until no frame it left
out could rank among the moments up to the page's end, so pages neither overlap nor skip a moment.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import time
from concurrent.futures import Executor
from functools import partial

import numpy as np

from moments_server.catalog.catalog import Catalog, Hit
from moments_server.config import Settings
from moments_server.errors import Expired, InvalidArgument
from moments_server.inference.embedder import Embedded, Embedder
from moments_server.service import compose
from moments_server.service.filters import build_constraints
from moments_server.service.moments import DEFAULT_MERGE_TOLERANCE, to_moments
from moments_server.service.replies import SearchPage, Timing, decode_page_token
from moments_server.service.requests import MomentSpan, SearchQuery


def fingerprint(query: SearchQuery) -> str:
    """What a page token is bound to: every field of the query but the token, pictures by their digest.
    (The dataclasses' repr, not asdict + JSON: 4 us a query instead of 31.)"""
    digest = hashlib.sha256()
    pictures = [query.image, *(part.image for part in query.parts)]
    plain = dataclasses.replace(
        query, page_token="", image=None, parts=[dataclasses.replace(p, image=None) for p in query.parts]
    )
    digest.update(repr(plain).encode())
    for picture in pictures:
        digest.update(b"-" if picture is None else hashlib.sha256(picture).digest())
    return digest.hexdigest()[:16]


class SearchService:
    def __init__(self, settings: Settings, embedder: Embedder, catalog: Catalog, executor: Executor) -> None:
        self.settings = settings
        self.embedder = embedder
        self.catalog = catalog
        self.executor = executor

    async def search(self, request: SearchQuery, deadline: float | None) -> SearchPage:
        started = time.perf_counter()
        top_k = request.top_k or self.settings.default_top_k
        if top_k > self.settings.max_top_k:
            raise InvalidArgument(f"top_k is {request.top_k}; it must be between 1 and {self.settings.max_top_k}")
        bound_to = fingerprint(request)
        offset = decode_page_token(request.page_token, bound_to) if request.page_token else 0
        if offset + top_k > self.settings.max_page_depth:
            raise InvalidArgument(f"results are served to a depth of {self.settings.max_page_depth}; refine the query")
        options = request.options
        min_score = options.min_score
        if min_score is not None and not -1.0 <= min_score <= 1.0:
            raise InvalidArgument("options.min_score is a cosine similarity: between -1 and 1")
        relative = options.relative_score
        if relative is not None and not 0.0 <= relative <= 2.0:
            raise InvalidArgument("options.relative_score is a distance below the best score: between 0 and 2")
        tolerance = DEFAULT_MERGE_TOLERANCE if options.merge_tolerance is None else options.merge_tolerance
        if not 0.0 <= tolerance <= 2.0:
            raise InvalidArgument("options.merge_tolerance must be between 0 and 2")
        if options.group_by_video and options.max_per_video not in (0, 1):
            raise InvalidArgument(
                f"group_by_video is max_per_video = 1, and max_per_video is {options.max_per_video}: set one of them"
            )
        per_video = 1 if options.group_by_video else options.max_per_video
        shots = options.moment_span is MomentSpan.SHOT
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
        timing = Timing(
            queue_ms=max(texts.queue_s, images.queue_s) * 1e3,
            inference_ms=max(texts.inference_s, images.inference_s) * 1e3,
            store_ms=store_s * 1e3,
            total_ms=(time.perf_counter() - started) * 1e3,
        )
        page = moments[offset : offset + top_k]
        return SearchPage(page, offset, len(moments) > offset + top_k, bound_to, timing)

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
