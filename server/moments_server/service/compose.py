"""Composed queries: weighted parts, alternatives ("any of") and negative texts, checked and scored.

Every vector is L2-normalised, so each similarity is a cosine (a dot product). The score of a frame f:

    max_i cos(q_i, f) - lambda * max(0, max_j cos(n_j, f) - tau)

where q_0 = normalize(sum of w_k * e_k) over the weighted parts (or the plain text/image), q_1.. the
alternative texts and n_j the negative texts. Without alternatives and negatives it is cos(q_0, f), the
score of a plain query.

Negatives are a penalty on the score, not a vector subtraction: on the shapes-demo model, "a triangle"
minus the vector of "a green shape" ranks red circles (no triangle at all) above the green triangles it
meant to push down, while the penalty leaves every frame not close to the negative where it was.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from moments_server.catalog.catalog import Hit
from moments_server.config import Settings
from moments_server.errors import BadImage, InvalidArgument
from moments_server.pictures import check_image
from moments_server.service.requests import SearchQuery

DEFAULT_NEGATIVE_WEIGHT = 1.0
DEFAULT_NEGATIVE_MARGIN = 0.0
_ZERO_NORM = 1e-6


@dataclass
class Plan:
    """What a request asks to embed, and how the vectors combine."""

    # The combined query's parts: (text or image bytes, weight); empty when only alternatives are given.
    parts: list[tuple[str | bytes, float]] = field(default_factory=list)
    any_texts: list[str] = field(default_factory=list)
    negative_texts: list[str] = field(default_factory=list)
    negative_weight: float = DEFAULT_NEGATIVE_WEIGHT
    negative_margin: float = DEFAULT_NEGATIVE_MARGIN

    @property
    def texts(self) -> list[str]:
        """Every text to embed, in the order `vectors` reads them back."""
        own = [p for p, _ in self.parts if isinstance(p, str)]
        return own + self.any_texts + self.negative_texts

    @property
    def images(self) -> list[bytes]:
        return [p for p, _ in self.parts if isinstance(p, bytes)]

    def vectors(self, texts: np.ndarray, images: np.ndarray, dim: int) -> tuple[list[np.ndarray], np.ndarray]:
        """(query vectors, negative vectors (m, dim)) from the embeddings of `texts` and `images`."""
        t = iter(texts)
        i = iter(images)
        queries: list[np.ndarray] = []
        if self.parts:
            combined = np.zeros(dim, np.float64)
            for p, w in self.parts:
                combined += w * (next(t) if isinstance(p, str) else next(i))
            norm = float(np.linalg.norm(combined))
            if norm < _ZERO_NORM:
                raise InvalidArgument("the weighted parts cancel out (their sum is the zero vector); change a weight")
            queries.append(np.asarray(combined / norm, dtype=np.float32))
        queries.extend(next(t) for _ in self.any_texts)
        negatives = [next(t) for _ in self.negative_texts]
        return queries, np.array(negatives, dtype=np.float32).reshape(len(negatives), dim)


def _text(text: str, where: str, settings: Settings) -> str:
    if not text.strip():
        raise InvalidArgument(f"{where} is empty")
    if len(text) > settings.max_query_chars:
        raise InvalidArgument(f"{where} has {len(text)} characters; at most {settings.max_query_chars}")
    return text


def _image(data: bytes, where: str, settings: Settings) -> None:
    try:
        check_image(data, settings.max_image_bytes, settings.max_image_pixels, where)
    except BadImage as e:
        if where not in str(e):
            raise BadImage(f"{where}: {e}") from e
        raise


def _weight(weight: float, where: str) -> float:
    if not math.isfinite(weight):
        raise InvalidArgument(f"{where} is {weight}; a weight is a finite number >= 0 (0 means 1)")
    if weight < 0:
        raise InvalidArgument(
            f"{where} is {weight}; weights are >= 0: to push results away from a text, use negative_texts"
        )
    return weight or 1.0


def plan(request: SearchQuery, settings: Settings) -> Plan:
    """The request's query, checked (INVALID_ARGUMENT with the offending field named)."""
    out = Plan()
    kind = "text" if request.text is not None else "image" if request.image is not None else None
    if kind is not None and request.parts:
        raise InvalidArgument("set text or image, or parts, not both: parts is the general form of either")
    n = max(len(request.parts), kind is not None) + len(request.any_texts) + len(request.negative_texts)
    if n > settings.max_query_parts:
        raise InvalidArgument(
            f"the query has {n} parts (parts, any_texts and negative_texts together); at most "
            f"{settings.max_query_parts}"
        )
    if request.text is not None:
        if not request.text.strip():
            raise InvalidArgument("the text query is empty")
        if len(request.text) > settings.max_query_chars:
            raise InvalidArgument(
                f"the text query has {len(request.text)} characters; at most {settings.max_query_chars}"
            )
        out.parts.append((request.text, 1.0))
    elif request.image is not None:
        check_image(request.image, settings.max_image_bytes, settings.max_image_pixels, "the query image")
        out.parts.append((request.image, 1.0))
    for i, part in enumerate(request.parts):
        weight = _weight(part.weight, f"parts[{i}].weight")
        if part.text is not None:
            out.parts.append((_text(part.text, f"parts[{i}].text", settings), weight))
        elif part.image is not None:
            _image(part.image, f"parts[{i}].image", settings)
            out.parts.append((part.image, weight))
        else:
            raise InvalidArgument(f"parts[{i}] has neither text nor image")
    out.any_texts = [_text(t, f"any_texts[{i}]", settings) for i, t in enumerate(request.any_texts)]
    out.negative_texts = [_text(t, f"negative_texts[{i}]", settings) for i, t in enumerate(request.negative_texts)]
    if not out.parts and not out.any_texts:
        if out.negative_texts:
            raise InvalidArgument("negative_texts need a query to push against: set text, image, parts or any_texts")
        raise InvalidArgument("the request needs a query: set text or image")
    options = request.options
    if options.negative_weight is not None:
        out.negative_weight = options.negative_weight
        if not (math.isfinite(out.negative_weight) and 0.0 <= out.negative_weight <= 100.0):
            raise InvalidArgument("options.negative_weight must be between 0 and 100 (default 1)")
    if options.negative_margin is not None:
        out.negative_margin = options.negative_margin
        if not -1.0 <= out.negative_margin <= 1.0:
            raise InvalidArgument("options.negative_margin is a cosine similarity: between -1 and 1 (default 0)")
    return out


def combine(per_query: Sequence[list[Hit]], negatives: np.ndarray, weight: float, margin: float) -> list[Hit]:
    """One hit per frame: its best score over the query vectors, less the negatives' penalty."""
    best: dict[str, Hit] = {}
    for hits in per_query:
        for h in hits:
            key = h.key or f"{h.video_id}@{h.frame_s}"
            if key not in best or h.score > best[key].score:
                best[key] = h
    if not len(negatives):
        return list(best.values())
    out = []
    for h in best.values():
        if h.vector is None:  # the store returned no vector: no penalty can be computed
            raise RuntimeError("the store answered a kNN without the frame vectors it was asked for")
        closest = float(np.max(negatives @ h.vector))
        out.append(replace(h, score=h.score - weight * max(0.0, closest - margin)))
    return out


def unseen_bound(per_query: Sequence[list[Hit]], k: int) -> float | None:
    """The highest score a frame that no kNN returned could have (None: every kNN returned all it had).

    A frame missing from query i's k nearest is at most as close to q_i as the k-th of them; penalties only
    lower a score.
    """
    full = [min(h.score for h in hits) for hits in per_query if len(hits) >= k]
    return max(full) if full else None
