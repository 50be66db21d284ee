"""The strings on which tokenizer.json is compared with open_clip: fixed cases and seeded random ones."""

from __future__ import annotations

import numpy as np


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
