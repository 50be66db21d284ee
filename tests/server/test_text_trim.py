"""The text tower on trimmed ids (manifest text_trim): the Embedder cuts a batch's ids after its longest text's
last token, and the embeddings equal the full-length ones of the same graph."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moments_server.inference.embedder import TRIM_MULTIPLE, Embedder, trimmed_length
from moments_server.inference.manifest import load_manifest
from moments_server.inference.policy import CPU_POLICY, CUDA_POLICY
from moments_server.inference.sessions import load_towers

TEXTS = [
    "a red circle",
    "a blue square on a checkered background, seen from far away",
    "wow! a green triangle!!",  # '!' is token id 0 in CLIP's vocabulary: padding is what follows the last token
    "ein gelbes Kreuz & ein rotes Quadrat",
]


def test_trimmed_length() -> None:
    ids = np.zeros((3, 77), dtype=np.int64)
    ids[0, :5] = [49406, 320, 736, 2117, 49407]
    ids[1, :3] = [49406, 0, 49407]  # a token 0 inside a text
    assert trimmed_length(ids, 77) == TRIM_MULTIPLE  # 5 positions, rounded up
    ids[2, :12] = 7
    assert trimmed_length(ids, 77) == 16
    ids[2, :] = 7
    assert trimmed_length(ids, 77) == 77  # a text that fills the context: never past it
    assert trimmed_length(np.zeros((2, 77), dtype=np.int64), 77) == TRIM_MULTIPLE


def test_embedder_trims_and_agrees_with_full_length_ids(shapes_model_dir: Path) -> None:
    manifest = load_manifest(shapes_model_dir)
    assert manifest.text_trim  # this export's text graph takes any length
    text, image = load_towers(manifest, "cpu", threads=1)
    embedder = Embedder(manifest, text, image, CPU_POLICY, 0.0005, 64, 0)
    ids = embedder.tokenizer(TEXTS)
    cut = trimmed_length(ids, manifest.context_length)
    assert cut < manifest.context_length and not ids[:, cut:].any()
    full = text.run(ids)  # the same graph on all context_length positions

    async def embed() -> np.ndarray:
        embedder.start()
        try:
            return (await embedder.embed_texts(TEXTS)).vectors
        finally:
            await embedder.stop()

    got = asyncio.run(embed())
    assert np.sum(got * full, axis=1).min() >= 0.99999
    assert np.sum(got[0] * got[1]) < 0.999  # different texts, different vectors
    # the rows of one batch do not depend on the longest text beside them
    alone = text.run(ids[:1, :TRIM_MULTIPLE])
    assert float(np.sum(alone[0] * got[0])) >= 0.99999


def test_device_buffers_take_trimmed_ids_padded_to_their_lengths(shapes_model_dir: Path) -> None:
    """Bucketed device buffers have one shape per bucket: the CUDA policy's text lengths each get their own, a
    trimmed batch runs in the shortest that holds it, and the embeddings equal the full-length ones."""
    manifest = load_manifest(shapes_model_dir)
    text, image = load_towers(manifest, "cpu", threads=1)
    policy = replace(CUDA_POLICY, text_max_batch=8, image_max_batch=2)  # the CUDA policy on the 'cpu' device
    embedder = Embedder(manifest, text, image, policy, 0.0005, 64, 0)
    io = embedder.text_tower.io
    assert io is not None and io.lengths == [16, 32, manifest.context_length]
    ids = embedder.tokenizer(TEXTS)
    cut = trimmed_length(ids, manifest.context_length)
    assert io.bucket(len(TEXTS), cut) == 4 and cut <= 16 and io._slot(4, cut).staging.shape == (4, 16)
    got = np.stack(embedder._run_text(TEXTS))
    full = text.run(ids)
    assert np.sum(got * full, axis=1).min() >= 0.99999
    long = ids.copy()
    long[0, :40] = 320  # a text of 40 positions: the 77-long buffer
    assert np.sum(io.run(long[:, :40]) * text.run(long), axis=1).min() >= 0.99999
    # after a 16-position batch, a shorter one in the same buffer: the positions it leaves are padding again
    sixteen = ids.copy()
    sixteen[:, 1:15] = 320
    io.run(sixteen[:, :16])
    np.testing.assert_array_equal(io.run(ids[:, :cut]), np.stack(embedder._run_text(TEXTS)))
    assert np.sum(io.run(ids[:, :cut]) * full, axis=1).min() >= 0.99999
    with pytest.raises(ValueError, match="longer than the longest"):
        io.run(np.zeros((1, manifest.context_length + 1), dtype=np.int64))
