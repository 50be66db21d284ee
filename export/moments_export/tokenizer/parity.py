"""tokenizer.json against open_clip: the known differences, what explains a mismatch, the parity report."""

from __future__ import annotations

from typing import Any

import numpy as np

from moments_export.tokenizer.build import PAD_ID
from moments_export.tokenizer.corpus import parity_corpus

#: What the JSON tokenizer does differently from open_clip, each with a probe string.
KNOWN_DIFFERENCES: list[dict[str, str]] = [
    {
        "id": "ftfy-mojibake",
        "description": "ftfy repairs mojibake (UTF-8 decoded as Latin-1/Windows-1252, e.g. 'cafÃ©' -> 'café'); "
        "the JSON tokenizer keeps the text as given.",
        "probe": "cafÃ© au lait",
    },
    {
        "id": "html-ftfy-round-with-lt",
        "description": "ftfy decodes named HTML references before open_clip's two html.unescape passes, "
        "but only when the text has no '<'; the JSON tokenizer always does (three levels of nested "
        "escapes), so a text with '<' and triple-escaped references differs.",
        "probe": "a < b &amp;amp;amp; c",
    },
    {
        "id": "html-rare-references",
        "description": "numeric character references outside the tabulated ones (decimal, hex and "
        "zero-padded forms of U+0020-U+007E, U+00A0-U+017F, U+2010-U+203F, € and ™) stay literal; every "
        "HTML5 named reference is tabulated.",
        "probe": "snowman &#9731; here",
    },
    {
        "id": "ftfy-uppercase-entities",
        "description": "ftfy also decodes some all-caps references ('&EACUTE;' -> 'É'); the JSON tokenizer "
        "leaves them literal.",
        "probe": "P&EACUTE;REZ",
    },
    {
        "id": "greek-final-sigma",
        "description": "str.lower() maps a word-final capital sigma to 'ς'; the JSON lower-casing maps "
        "every 'Σ' to 'σ'.",
        "probe": "ΟΔΟΣ",
    },
]


def encode_open_clip(open_clip_tokenizer: Any, texts: list[str]) -> np.ndarray:
    return open_clip_tokenizer(texts).numpy().astype(np.int64)


def encode_json(tok: Any, texts: list[str]) -> np.ndarray:
    return np.array([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


def explain_difference(text: str) -> str | None:
    """The id of the known difference that explains a mismatch on ``text``, if one does."""
    import ftfy

    if ftfy.fix_encoding(text) != text:
        return "ftfy-mojibake"
    if text.lower() != "".join(c.lower() for c in text):
        return "greek-final-sigma"
    if "&" in text and "<" in text:
        return "html-ftfy-round-with-lt"
    if "&" in text and text.upper() != text and any(c.isupper() for c in text.split("&", 1)[1][:12]):
        return "ftfy-uppercase-entities"
    if "&#" in text:
        return "html-rare-references"
    return None


def check_parity(open_clip_tokenizer: Any, tok: Any, seed: int = 0) -> dict[str, Any]:
    """Compare on :func:`parity_corpus` and on the known-difference probes.

    Returns ``parity_checked`` (corpus strings with identical ids), ``unexplained`` (mismatches no
    known difference explains: the caller fails verification on any) and ``known_differences`` (each
    with whether it shows on its probe and how many corpus strings it explains).
    """
    corpus = parity_corpus(seed)
    a = encode_open_clip(open_clip_tokenizer, corpus)
    b = encode_json(tok, corpus)
    if a.shape != b.shape:
        raise ValueError(f"tokenizer shapes differ: open_clip {a.shape}, tokenizer.json {b.shape}")
    bad = [i for i in range(len(corpus)) if not np.array_equal(a[i], b[i])]
    explained: dict[str, list[str]] = {}
    unexplained = []
    for i in bad:
        why = explain_difference(corpus[i])
        if why is None:
            unexplained.append({"text": corpus[i], "open_clip": _trim(a[i]), "tokenizer_json": _trim(b[i])})
        else:
            explained.setdefault(why, []).append(corpus[i])
    known = []
    for kd in KNOWN_DIFFERENCES:
        pa = encode_open_clip(open_clip_tokenizer, [kd["probe"]])[0]
        pb = encode_json(tok, [kd["probe"]])[0]
        seen = explained.get(kd["id"], [])
        known.append(
            {
                **kd,
                "differs_on_probe": not np.array_equal(pa, pb),
                "corpus_mismatches": len(seen),
                "corpus_examples": seen[:3],
            }
        )
    return {
        "parity_checked": len(corpus) - len(bad),
        "corpus_size": len(corpus),
        "unexplained": unexplained[:20],
        "unexplained_count": len(unexplained),
        "known_differences": known,
    }


def _trim(ids: np.ndarray) -> list[int]:
    lst = [int(x) for x in ids]
    while lst and lst[-1] == PAD_ID:
        lst.pop()
    return lst
