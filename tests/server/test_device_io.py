"""Device-resident I/O (inference/device_io.py) run on the 'cpu' device with the CPU provider, against plain
session.run on the shapes-demo towers; and the CUDA graph selection (inference/cuda_graphs.py), which is all of
the CUDA graph path that runs without a card."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moments_server.inference.cuda_graphs import cuda_graph_choice, graph_id
from moments_server.inference.device_io import DeviceIO
from moments_server.inference.embedder import Embedder, buckets
from moments_server.inference.manifest import ModelManifest, load_manifest
from moments_server.inference.policy import CPU_POLICY, CUDA
from moments_server.inference.sessions import Tower, load_towers

SIZES = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def towers(shapes_model_dir: Path) -> tuple[ModelManifest, Tower, Tower]:
    manifest = load_manifest(shapes_model_dir)
    text, image = load_towers(manifest, "cpu", threads=1)
    return manifest, text, image


def _frames(manifest: ModelManifest, n: int, seed: int) -> np.ndarray:
    size = manifest.image_size
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def _ids(manifest: ModelManifest, n: int, seed: int) -> np.ndarray:
    ids = np.zeros((n, manifest.context_length), dtype=np.int64)
    ids[:, 0], ids[:, 1:5], ids[:, 5] = 49406, np.random.default_rng(seed).integers(300, 40000, (n, 4)), 49407
    return ids


def _plain_padded(tower: Tower, batch: np.ndarray, bucket: int) -> np.ndarray:
    padded = np.zeros((bucket, *batch.shape[1:]), dtype=batch.dtype)
    padded[: len(batch)] = batch
    out = tower.session.run([tower.output_name], {tower.input_name: padded})[0]
    return np.asarray(out[: len(batch)], dtype=np.float32)


def test_device_io_matches_session_run_bit_for_bit(towers: tuple[ModelManifest, Tower, Tower]) -> None:
    manifest, text, image = towers
    size = manifest.image_size
    image_io = DeviceIO(
        image.session, image.input_name, image.output_name, SIZES, (size, size, 3), manifest.embed_dim, device="cpu"
    )
    text_io = DeviceIO(
        text.session, text.input_name, text.output_name, SIZES, (manifest.context_length,), manifest.embed_dim
    )
    assert not image_io.pinned and not image_io.cuda_graphs  # nothing to pin on the CPU
    # full buckets, partial ones (3 in 4, 5 in 8), and a small batch after a larger one in the same bucket
    # (the rows the larger one left must be zeros again)
    for seed, n in enumerate((1, 2, 3, 8, 5, 4, 3)):
        bucket = image_io.bucket(n)
        assert bucket == next(s for s in SIZES if s >= n)
        frames = _frames(manifest, n, seed)
        got = image_io.run(frames)
        assert got.shape == (n, manifest.embed_dim) and got.dtype == np.float32
        assert np.array_equal(got, _plain_padded(image, frames, bucket)), n
        # a list of frames (what the batcher hands over) takes the same path without np.stack
        assert np.array_equal(image_io.run(list(frames)), got)
        # and the padding changes nothing beyond float rounding against the unpadded run
        np.testing.assert_allclose(got, image.run(frames), atol=1e-5)
        ids = _ids(manifest, n, seed)
        assert np.array_equal(text_io.run(ids), _plain_padded(text, ids, text_io.bucket(n))), n


def test_results_outlive_the_next_run_of_their_bucket(towers: tuple[ModelManifest, Tower, Tower]) -> None:
    manifest, _, image = towers
    size = manifest.image_size
    io = DeviceIO(image.session, image.input_name, image.output_name, [4], (size, size, 3), manifest.embed_dim)
    first = io.run(_frames(manifest, 4, 1))
    kept = first.copy()
    io.run(_frames(manifest, 4, 2))
    assert np.array_equal(first, kept)  # the output is a copy, not a view of the bucket's buffer


def test_a_batch_larger_than_the_largest_bucket_is_refused(towers: tuple[ModelManifest, Tower, Tower]) -> None:
    manifest, _, image = towers
    size = manifest.image_size
    io = DeviceIO(image.session, image.input_name, image.output_name, SIZES, (size, size, 3), manifest.embed_dim)
    with pytest.raises(ValueError, match="larger than the largest warmed bucket"):
        io.run(_frames(manifest, 9, 0))
    with pytest.raises(ValueError, match="empty"):
        io.run([])


def test_an_embedder_padding_to_buckets_embeds_as_the_plain_one(shapes_model_dir: Path) -> None:
    """The CUDA policy's path (device I/O per bucket, padding, warm-up per bucket) run on the CPU provider."""
    manifest = load_manifest(shapes_model_dir)
    padded_policy = replace(CPU_POLICY, pad_to_buckets=True, text_max_batch=8, image_max_batch=4)
    text, image = load_towers(manifest, "cpu", threads=1)
    padded = Embedder(manifest, text, image, padded_policy, 0.001, 100, 0)
    assert text.io is not None and image.io is not None
    assert (text.io.sizes, image.io.sizes) == (buckets(8), buckets(4)) == ([1, 2, 4, 8], [1, 2, 4])
    padded.warm_up(autotune=False)
    p_text, p_image = load_towers(manifest, "cpu", threads=1)
    plain = Embedder(manifest, p_text, p_image, replace(CPU_POLICY, text_max_batch=8), 0.001, 100, 0)
    assert p_text.io is None and p_image.io is None  # the CPU policy runs the session plainly
    texts = ["a red circle", "a blue square", "a green triangle"]
    got, want = padded._run_text(texts), plain._run_text(texts)
    np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-5)
    frames = list(_frames(manifest, 3, 7))
    np.testing.assert_allclose(np.stack(padded._run_image(frames)), np.stack(plain._run_image(frames)), atol=1e-5)


def test_cuda_graphs_are_chosen_only_where_they_can_run() -> None:
    cpu = "CPUExecutionProvider"
    assert cuda_graph_choice("auto", cpu, "1.32.0") == (
        False,
        "CPUExecutionProvider serves the towers: CUDA graphs are the CUDA provider's",
    )
    assert cuda_graph_choice("yes", cpu, "1.32.0")[0] is False
    assert cuda_graph_choice("no", CUDA, "1.32.0") == (False, "cuda_graphs is no")
    assert cuda_graph_choice("auto", CUDA, "1.32.0") == (True, "to be confirmed by the session")
    on = cuda_graph_choice("auto", CUDA, "1.31.1", all_nodes_on_cuda=True)
    assert on == (True, "every node on the CUDA provider")
    off, why = cuda_graph_choice("auto", CUDA, "1.32.0", all_nodes_on_cuda=False)
    assert not off and "not every node" in why
    off, why = cuda_graph_choice("auto", CUDA, "1.17.3")
    assert not off and "1.18" in why
    assert cuda_graph_choice("auto", CUDA, "1.18.0")[0] and cuda_graph_choice("auto", CUDA, "1.20.0.dev20240501")[0]
    with pytest.raises(ValueError, match="auto, yes or no"):
        cuda_graph_choice("maybe", CUDA, "1.32.0")
    assert [graph_id(i) for i in range(3)] == ["1", "2", "3"]  # 0 is onnxruntime's default id, -1 skips capture


def test_cpu_towers_capture_no_graphs_and_yes_is_refused_there(shapes_model_dir: Path) -> None:
    manifest = load_manifest(shapes_model_dir)
    text, image = load_towers(manifest, "cpu", threads=1, cuda_graphs="auto")
    assert (text.cuda_graphs, image.cuda_graphs) == (False, False)
    with pytest.raises(RuntimeError, match="cuda_graphs is yes, but CPUExecutionProvider serves the towers"):
        load_towers(manifest, "cpu", threads=1, cuda_graphs="yes")
