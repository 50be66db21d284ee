"""The exported tokenizer: a self-contained HF `tokenizers` file (padding, truncation and sot/eot inside).

Its normalizer reproduces open_clip's text cleaning (ftfy, HTML unescaping) with thousands of literal
Replace rules, which costs milliseconds per query. Most queries are plain ASCII without '&', and no
literal rule with a non-ASCII character or a '&' can match such a text, so those go through a twin
tokenizer built from the same file without those rules: the same ids, ~100x faster. Everything else
goes through the full one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer


def _can_touch_plain_text(rule: dict[str, Any]) -> bool:
    """False only for a literal Replace rule that cannot match ASCII text without '&'."""
    if rule.get("type") != "Replace" or "String" not in rule.get("pattern", {}):
        return True
    literal = str(rule["pattern"]["String"])
    return literal.isascii() and "&" not in literal


def plain_text_tokenizer(spec: dict[str, Any]) -> Tokenizer:
    spec = json.loads(json.dumps(spec))
    normalizer = spec.get("normalizer") or {}
    if normalizer.get("type") == "Sequence":
        normalizer["normalizers"] = [r for r in normalizer["normalizers"] if _can_touch_plain_text(r)]
    return Tokenizer.from_str(json.dumps(spec))


def is_plain(text: str) -> bool:
    return text.isascii() and "&" not in text


class TextTokenizer:
    def __init__(self, path: Path, context_length: int) -> None:
        spec = json.loads(path.read_text(encoding="utf-8"))
        self._full = Tokenizer.from_str(json.dumps(spec))
        self._plain = plain_text_tokenizer(spec)
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for tokenizer, rows in (
            (self._plain, [i for i, t in enumerate(texts) if is_plain(t)]),
            (self._full, [i for i, t in enumerate(texts) if not is_plain(t)]),
        ):
            if not rows:
                continue
            for row, enc in zip(rows, tokenizer.encode_batch([texts[i] for i in rows]), strict=True):
                tokens = enc.ids[: self.context_length]
                ids[row, : len(tokens)] = tokens
        return ids
