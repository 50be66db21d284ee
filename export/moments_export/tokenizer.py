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

from __future__ import annotations

import contextlib
import html
import html.entities
import json
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np

SOT = "<start_of_text>"
EOT = "<end_of_text>"
PAD_ID = 0

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


def _isspace_class() -> str:
    chars = [chr(i) for i in range(0x110000) if chr(i).isspace()]
    return "".join(f"\\x{{{ord(c):x}}}" for c in chars)


def _ftfy_char_map() -> dict[str, str]:
    """Single-character replacements ftfy.fix_text makes (besides mojibake repair)."""
    from ftfy.chardata import CONTROL_CHARS, LIGATURES, WIDTH_MAP

    out: dict[str, str] = {}
    # fix_c1_controls: C1 controls read as Windows-1252 ("sloppy": undefined ones stay)
    for i in range(0x80, 0xA0):
        with contextlib.suppress(UnicodeDecodeError):
            out[chr(i)] = bytes([i]).decode("cp1252")
    for table in (LIGATURES, WIDTH_MAP):
        for k, v in table.items():
            out[chr(k)] = str(v)
    for ch in "\u02bc\u2018\u2019\u201a\u201b":
        out[ch] = "'"
    for ch in "\u201c\u201d\u201e\u201f":
        out[ch] = '"'
    for k in CONTROL_CHARS:
        out[chr(k)] = ""
    return out


def _named_entities() -> list[tuple[str, str]]:
    """HTML5 named references that end in ';' ('&'-producing ones last: a pass never rescans its output)."""
    named = [(f"&{k}", v) for k, v in html.entities.html5.items() if k.endswith(";")]
    return [p for p in named if "&" not in p[1]] + [p for p in named if "&" in p[1]]


def _numeric_codepoints() -> list[int]:
    return [*range(0x20, 0x7F), *range(0xA0, 0x180), *range(0x2010, 0x2040), 0x20AC, 0x2122]


def _entity_rounds() -> list[tuple[str, str]]:
    """(pattern, replacement) pairs for one html.unescape pass; '&'-producing ones come last."""
    named = [(f"&{k}", v) for k, v in html.entities.html5.items() if k.endswith(";")]
    legacy = sorted(
        ((f"&{k}", v) for k, v in html.entities.html5.items() if not k.endswith(";")),
        key=lambda kv: -len(kv[0]),
    )
    numeric: list[tuple[str, str]] = []
    for cp in _numeric_codepoints():
        val = html.unescape(f"&#{cp};")
        forms = [f"&#{cp};", f"&#x{cp:x};", f"&#x{cp:X};"]
        if cp < 100:
            forms.append(f"&#0{cp};")
        if cp < 0x100:
            forms.append(f"&#x{cp:04x};")
        for f in dict.fromkeys(forms):
            if html.unescape(f) == val:
                numeric.append((f, val))
    pairs = named + numeric
    amp_first = [p for p in pairs if "&" not in p[1]]
    amp_last = [p for p in pairs if "&" in p[1]]
    legacy_plain = [p for p in legacy if "&" not in p[1]]
    legacy_amp = [p for p in legacy if "&" in p[1]]
    return amp_first + legacy_plain + amp_last + legacy_amp


def build_tokenizer(open_clip_tokenizer: Any) -> Any:
    """A ``tokenizers.Tokenizer`` equivalent to ``open_clip_tokenizer`` (a SimpleTokenizer)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

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

    norm: list[Any] = []
    # ftfy.fix_text: its own HTML pass (named references with ';'), terminal escapes, character tables, NFC
    for pat, rep in _named_entities():
        norm.append(normalizers.Replace(pat, rep))
    norm.append(normalizers.Replace(Regex("\x1b\\[[0-9;]*[a-zA-Z]"), ""))
    for k, v in _ftfy_char_map().items():
        norm.append(normalizers.Replace(k, v))
    norm.append(normalizers.NFC())
    # html.unescape(html.unescape(text))
    rounds = _entity_rounds()
    for _ in range(2):
        for pat, rep in rounds:
            norm.append(normalizers.Replace(pat, rep))
    # whitespace_clean + strip, then lower()
    norm.append(normalizers.Replace(Regex(f"[{_isspace_class()}]+"), " "))
    norm.append(normalizers.Strip())
    norm.append(normalizers.Lowercase())
    tok.normalizer = normalizers.Sequence(norm)

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


# ---------------------------------------------------------------------------------------------- corpus


def parity_corpus(seed: int = 0, size: int = 640) -> list[str]:
    """At least ``size`` varied strings: captions, sentences, unicode, punctuation, html, emoji, CJK..."""
    import moments_shapes as shapes

    fixed: list[str] = [
        "",
        " ",
        "   \t\n  ",
        "a",
        "A",
        "a dog",
        "a photo of a cat",
        "A man riding a horse on the beach at sunset.",
        "Two children playing football in a park, with trees in the background!",
        "what's the weather like? it's sunny; they're out.",
        "I'll be there, you'd think we've won, I'm sure.",
        "rock'n'roll isn't dead",
        "goal!!! 3-2 in the 90th minute",
        "Price: $19.99 (-20%) — today only…",
        "e-mail me at someone@example.com or visit https://example.com/a?b=c&d=e",
        "C++ vs. C# vs. F#; x^2 + y_1 = z/3",
        "<b>bold</b> and <i>italic</i>",
        "Tom &amp; Jerry",
        "fish &amp; chips &lt;3 &gt; &quot;quoted&quot; &#39;single&#39;",
        "caf&eacute; na&iuml;ve r&eacute;sum&eacute;",
        "&copy; 2024 &mdash; all rights reserved &trade;",
        "&amp;lt;tag&amp;gt;",
        "&nbsp;leading nbsp entity",
        "x &#8212; y &#x2014; z &#8230;",
        "AT&T and R&D",
        "&unknownentity; stays",
        "café naïve résumé façade coöperate",
        "cafe\u0301 (combining accent)",
        "Ångström",
        "straße STRASSE",
        "İstanbul",
        "ΑΘΗΝΑ Αθήνα",
        "Москва́ — столица России",
        "東京タワーの夜景",
        "一只猫坐在桌子上",
        "강아지가 공을 가지고 논다",
        "ｆｕｌｌｗｉｄｔｈ ＴＥＸＴ　ｗｉｔｈ　ideographic space",
        "halfwidth ｶﾀｶﾅ",
        "ﬁne ﬂowers ﬀ ﬃ ﬄ",
        "\u201csmart quotes\u201d and \u2018single\u2019 ones",
        "it\u2019s a dog\u2019s life",
        "emoji 😀🎉🐶 and flags 🇺🇸🇯🇵",
        "family 👨‍👩‍👧‍👦 and skin tone 👍🏽",
        "❤️ ✨ ★ ☆ ♠ ♥",
        "math: ∑ ∫ √ ∞ ≠ ≤ ≥ ± × ÷",
        "arrows → ← ↑ ↓ ⇒",
        "tab\tseparated\tvalues",
        "new\nline\r\nand\rreturns",
        "multiple     spaces    between",
        "\u00a0non-breaking\u00a0spaces\u00a0",
        "zero\u200bwidth\u200bspace",
        "soft\u00adhyphen",
        "bell\x07 and escape\x1b[31mred\x1b[0m",
        "C1 control \x85 next line \x93quoted\x94",
        "BOM\ufeffinside",
        "numbers 1234567890 and 3.14159 and 1,000,000",
        "٣٤٥ Arabic-Indic digits and ½ ¾ ² ³",
        "עברית ועוד",
        "العربية لغة جميلة",
        "हिन्दी भाषा",
        "ภาษาไทย",
        "ALL CAPS SENTENCE ABOUT A RED CIRCLE",
        "MiXeD CaSe WoRdS",
        "hashtag #sunset @user",
        "snake_case and camelCase and kebab-case",
        "...!!!???",
        "'quoted' \"double\" `backtick`",
        "<start_of_text> literal special tokens <end_of_text>",
        "<|startoftext|>hf style<|endoftext|>",
        "don't won't can't shouldn't y'all",
        "'s 't 're 've 'm 'll 'd",
        "O'Reilly's book",
        "a\u0000nul",
    ]
    for _, _, cap in shapes.all_captions():
        fixed.append(cap)
        fixed.append(cap.upper())
        fixed.append(f"a photo of {cap}")
    fixed.append(" ".join(["word"] * 100))
    fixed.append("supercalifragilisticexpialidocious " * 30)
    fixed.append("😀" * 80)
    fixed.append("東京" * 100)
    fixed.append("a, " * 60)
    fixed.append("x" * 500)
    fixed.append("The quick brown fox jumps over the lazy dog. " * 8)

    g = np.random.default_rng(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyz",
        "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "0123456789",
        " ,.;:!?'\"()[]{}<>-_/\\|@#$%^&*+=~`",
        "      \t\n",
        "éèêëàâäôöûüçñßøåæœ",
        "αβγδεζηθλμπσφψωΔΣΩ",
        "абвгдежзийклмнопрстуфхцчшщыэюя",
        "日本語中文漢字東京大阪北京上海",
        "ひらがなカタカナ",
        "한국어문장",
        "😀😃🎉🐶🐱🚗🌈🍕🔥💯",
        "“”‘’«»–—…•",
        "ﬁﬂＡＢＣａｂｃ１２３",
    ]
    words = [
        "a",
        "the",
        "red",
        "green",
        "blue",
        "yellow",
        "orange",
        "purple",
        "circle",
        "square",
        "triangle",
        "cross",
        "dog",
        "cat",
        "man",
        "woman",
        "car",
        "street",
        "beach",
        "sunset",
        "night",
        "city",
        "tree",
        "river",
        "mountain",
        "person",
        "running",
        "walking",
        "on",
        "in",
        "with",
        "of",
        "and",
    ]
    entities = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&eacute;", "&nbsp;", "&hellip;", "&#x27;", "&amp;amp;"]
    while len(fixed) < size:
        kind = int(g.integers(0, 4))
        if kind == 0:  # random characters from a few pools
            chosen = [pools[int(i)] for i in g.choice(len(pools), size=int(g.integers(1, 4)), replace=False)]
            alphabet = "".join(chosen)
            n = int(g.integers(0, 60))
            fixed.append("".join(alphabet[int(i)] for i in g.integers(0, len(alphabet), n)))
        elif kind == 1:  # sentences of words with punctuation and case
            n = int(g.integers(1, 25))
            ws = [words[int(i)] for i in g.integers(0, len(words), n)]
            s = " ".join(w.capitalize() if g.random() < 0.2 else w for w in ws)
            fixed.append(s + str(g.choice([".", "!", "?", "", "...", " :)"])))
        elif kind == 2:  # words mixed with entities
            n = int(g.integers(1, 12))
            parts = [
                words[int(i)] if g.random() < 0.7 else str(g.choice(entities)) for i in g.integers(0, len(words), n)
            ]
            fixed.append(" ".join(parts))
        else:  # long texts, over the context length
            n = int(g.integers(60, 160))
            fixed.append(" ".join(words[int(i)] for i in g.integers(0, len(words), n)))
    return fixed


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


def nfc(s: str) -> str:  # small helper for tests
    return unicodedata.normalize("NFC", s)
