"""The server's tokenizer fast path gives exactly the ids of the exported tokenizer."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from moments_server.inference.tokenizer import TextTokenizer, is_plain


def test_plain_text_fast_path_matches_the_full_tokenizer(shapes_model_dir: Path) -> None:
    manifest = json.loads((shapes_model_dir / "manifest.json").read_text())
    path = shapes_model_dir / manifest["files"]["tokenizer"]["path"]
    full = Tokenizer.from_file(str(path))
    ours = TextTokenizer(path, manifest["context_length"])
    rng = random.Random(0)
    alphabet = string.printable.replace("&", "")
    texts = ["", "a red circle", "  A  Person\triding a bicycle!!  ", "x" * 500, "\x1b[31mred\x1b[0m text"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 120))) for _ in range(300)]
    # Not plain: these take the full path, in the same batch.
    texts += ["caf\u00e9 &amp; cr\u00e8me", "fish &amp; chips", "\u00c9COLE", "\u65e5\u672c\u8a9e"]
    assert sum(not is_plain(t) for t in texts) == 4
    got = ours(texts)
    want = np.zeros_like(got)
    for row, enc in enumerate(full.encode_batch(texts)):
        want[row, : len(enc.ids[: got.shape[1]])] = enc.ids[: got.shape[1]]
    np.testing.assert_array_equal(got, want)
