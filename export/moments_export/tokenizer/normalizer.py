"""The normalizer that reproduces open_clip's text cleaning (ftfy, html.unescape twice, whitespace, lower)."""

from __future__ import annotations

import contextlib
import html
import html.entities
from typing import Any


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
    named = _named_entities()
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


def build_normalizer() -> Any:
    """A ``tokenizers`` normalizer doing what open_clip's ``basic_clean``, ``whitespace_clean`` and lower() do."""
    from tokenizers import Regex, normalizers

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
    return normalizers.Sequence(norm)
