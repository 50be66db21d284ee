"""open_clip's CLIP BPE tokenizer as a self-contained Hugging Face ``tokenizers`` JSON file.

``Tokenizer.from_file("tokenizer.json").encode_batch(texts)`` yields, for every text, exactly
``context_length`` ids: ``<start_of_text>`` (49406), the BPE ids, ``<end_of_text>`` (49407), then zeros;
an over-long text keeps its first ``context_length - 2`` BPE ids and still ends with ``<end_of_text>``,
which is what ``open_clip.SimpleTokenizer`` produces (it truncates and overwrites the last id with eot).

open_clip cleans text with ``ftfy.fix_text``, ``html.unescape`` twice, whitespace collapsing and
``str.lower()``. The JSON's normalizer reproduces the deterministic parts of that: ftfy's C1-control,
ligature, character-width, quote, terminal-escape and control-character fixes and NFC; HTML named and
numeric character references (two rounds); Unicode whitespace collapsing and stripping; lower-casing.
What a table-driven normalizer cannot do is listed in :data:`KNOWN_DIFFERENCES` and in the manifest.
"""

from moments_export.tokenizer.build import EOT, PAD_ID, SOT, build_tokenizer, write_tokenizer
from moments_export.tokenizer.corpus import parity_corpus
from moments_export.tokenizer.parity import KNOWN_DIFFERENCES, check_parity, explain_difference

__all__ = [
    "EOT",
    "KNOWN_DIFFERENCES",
    "PAD_ID",
    "SOT",
    "build_tokenizer",
    "check_parity",
    "explain_difference",
    "parity_corpus",
    "write_tokenizer",
]
