"""The exported tokenizer: a self-contained HF `tokenizers` file (padding, truncation and sot/eot inside)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class TextTokenizer:
    def __init__(self, path: Path, context_length: int) -> None:
        self._tokenizer = Tokenizer.from_file(str(path))
        self.context_length = context_length

    def __call__(self, texts: list[str]) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        ids = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, enc in enumerate(encodings):
            tokens = enc.ids[: self.context_length]
            ids[row, : len(tokens)] = tokens
        return ids
