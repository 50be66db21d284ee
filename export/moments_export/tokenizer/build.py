"""The ``tokenizers.Tokenizer`` built from open_clip's SimpleTokenizer, and its byte-stable JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moments_export.tokenizer.normalizer import build_normalizer

SOT = "<start_of_text>"
EOT = "<end_of_text>"
PAD_ID = 0


def build_tokenizer(open_clip_tokenizer: Any) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to ``open_clip_tokenizer`` (a SimpleTokenizer)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    oc = open_clip_tokenizer
    ctx = int(oc.context_length)
    vocab = dict(oc.encoder)
    merges = [pair for pair, _ in sorted(oc.bpe_ranks.items(), key=lambda kv: kv[1])]
    bpe = models.BPE(
        vocab=vocab,
        merges=merges,
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        fuse_unk=False,
        unk_token=None,
    )
    tok = Tokenizer(bpe)
    tok.normalizer = build_normalizer()
    pattern = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.BPEDecoder(suffix="</w>")])
    tok.add_special_tokens(
        [
            AddedToken(SOT, special=True, normalized=True),
            AddedToken(EOT, special=True, normalized=True),
        ]
    )
    sot_id, eot_id = vocab[SOT], vocab[EOT]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}",
        pair=f"{SOT} $A {EOT} $B {EOT}",
        special_tokens=[(SOT, sot_id), (EOT, eot_id)],
    )
    tok.enable_truncation(max_length=ctx)
    tok.enable_padding(length=ctx, pad_id=PAD_ID, pad_token=oc.decoder[PAD_ID])
    return tok


def write_tokenizer(open_clip_tokenizer: Any, path: Path) -> Any:
    tok = build_tokenizer(open_clip_tokenizer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    # sorted keys + fixed layout make the file byte-identical across runs
    data = json.loads(tok.to_str())
    tmp.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), encoding="utf-8")
    tmp.replace(path)
    return tok
