"""tokenizer.json: self-contained, fixed length, and identical to open_clip on a varied corpus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.export.conftest import torch_ref

SOT, EOT = 49406, 49407


def _tok(d: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(d / "tokenizer.json"))


def test_fixed_length_sot_eot_padding(tiny_dir: Path) -> None:
    tok = _tok(tiny_dir)
    texts = ["", "a red circle", "word " * 200, "😀" * 100]
    enc = [e.ids for e in tok.encode_batch(texts)]
    assert all(len(ids) == 77 for ids in enc)
    assert enc[0][:3] == [SOT, EOT, 0] and set(enc[0][2:]) == {0}
    assert enc[1][0] == SOT and enc[1][enc[1].index(EOT) + 1 :] == [0] * (76 - enc[1].index(EOT))
    for long in enc[2:]:  # truncated as open_clip truncates: last id is eot, no padding
        assert long[0] == SOT and long[-1] == EOT and 0 not in long and long.count(EOT) == 1
    # a single encode behaves the same as a batch
    assert tok.encode("a red circle").ids == enc[1]


def test_parity_corpus_against_open_clip(tiny_dir: Path, tmp_path: Path) -> None:
    from moments_export.tokenizer import explain_difference, parity_corpus

    corpus = parity_corpus(seed=0)
    extra = parity_corpus(seed=12345, size=300)[-150:]  # strings the export never checked
    texts = corpus + extra
    assert len(corpus) >= 500
    (tmp_path / "texts.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    torch_ref(
        "tokenize", "--model", "ViT-B-32", "--texts", str(tmp_path / "texts.json"), "--out", str(tmp_path / "ids.npy")
    )
    want = np.load(tmp_path / "ids.npy")
    got = np.array([e.ids for e in _tok(tiny_dir).encode_batch(texts)], dtype=np.int64)
    assert got.shape == want.shape == (len(texts), 77)
    diff = [i for i in range(len(texts)) if not np.array_equal(got[i], want[i])]
    unexplained = [texts[i] for i in diff if explain_difference(texts[i]) is None]
    assert not unexplained, unexplained[:5]
    assert len(texts) - len(diff) >= 500
    manifest = json.loads((tiny_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["parity_checked"] == len(corpus) - sum(1 for i in diff if i < len(corpus))


def test_known_differences_are_listed_and_real(tiny_dir: Path) -> None:
    m = json.loads((tiny_dir / "manifest.json").read_text())
    kds = m["tokenizer"]["known_differences"]
    assert kds, "known differences must be listed"
    for kd in kds:
        assert kd["description"] and kd["probe"]
        assert isinstance(kd["differs_on_probe"], bool)
