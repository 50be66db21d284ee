"""shapes-demo: a model with real semantics, measured on held-out drawings with onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.export.conftest import ort_embed


def _heldout(seed: int, per_caption: int) -> tuple[np.ndarray, np.ndarray]:
    """Fresh drawings at the model's input size (a seed training never used)."""
    import moments_shapes as shapes

    caps = shapes.all_captions()
    g = np.random.default_rng(seed)
    imgs, labels = [], []
    for _ in range(per_caption):
        for j, (c, s, _) in enumerate(caps):
            imgs.append(shapes.draw(c, s, 32, g))
            labels.append(j)
    return np.stack(imgs), np.array(labels)


def _served_frames(
    model_dir: Path, tmp: Path, size: tuple[int, int], codec: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Every caption drawn into a real video (encoded with PyAV), decoded and framed by the server's own
    sampler with the framing the manifest pins: the pictures the model is fed at ingest."""
    import moments_shapes as shapes
    from moments_client.sample_video import write_shapes_video
    from moments_server.inference.manifest import load_manifest
    from moments_server.video.decode import sample

    caps = shapes.all_captions()
    order = [(c, s) for c, s, _ in caps] * 2
    path = tmp / f"{size[0]}x{size[1]}.{'webm' if codec == 'vp9' else 'mp4'}"
    schedule = write_shapes_video(path, order, seconds_each=1.0, fps=4, size=size, codec=codec, seed=seed)
    framing = load_manifest(model_dir).framing
    frames = list(sample(path, 1.0, 0, framing))
    assert len(frames) == len(schedule)
    index = {cap: j for j, (_, _, cap) in enumerate(caps)}
    return np.stack([f.rgb for f in frames]), np.array([index[seg.caption] for seg in schedule])


def _accuracy(d: Path, imgs: np.ndarray, labels: np.ndarray, template: str = "{ac} {c} {s}") -> tuple[float, float]:
    from tokenizers import Tokenizer

    import moments_shapes as shapes

    caps = shapes.all_captions()
    tok = Tokenizer.from_file(str(d / "tokenizer.json"))
    ids = np.array(
        [e.ids for e in tok.encode_batch([template.format(c=c, s=s, ac=shapes.article(c)) for c, s, _ in caps])],
        dtype=np.int64,
    )
    te = ort_embed(d / "text.onnx", "input_ids", ids)
    ie = ort_embed(d / "image.onnx", "pixels", imgs)
    sims = ie @ te.T
    i2t = float((sims.argmax(1) == labels).mean())
    t2i = float((labels[sims.argmax(0)] == np.arange(len(caps))).mean())
    return i2t, t2i


def test_accuracy_both_ways_on_heldout_drawings(shapes_model_dir: Path) -> None:
    imgs, labels = _heldout(seed=424242, per_caption=10)
    i2t, t2i = _accuracy(shapes_model_dir, imgs, labels)
    assert i2t >= 0.9, i2t
    assert t2i >= 0.9, t2i


@pytest.mark.parametrize(("size", "codec"), [((320, 240), "h264"), ((426, 240), "vp9"), ((240, 426), "h264")])
def test_accuracy_on_the_frames_the_server_decodes(
    shapes_model_dir: Path, tmp_path: Path, size: tuple[int, int], codec: str
) -> None:
    imgs, labels = _served_frames(shapes_model_dir, tmp_path, size, codec, seed=77)
    i2t, t2i = _accuracy(shapes_model_dir, imgs, labels, template="{c} {s}")
    assert i2t >= 0.9, i2t
    assert t2i >= 0.9, t2i


def test_manifest_records_accuracy(shapes_model_dir: Path) -> None:
    m = json.loads((shapes_model_dir / "manifest.json").read_text())
    assert m["model"] == "shapes-demo" and m["pretrained"] is None
    assert (m["image_size"], m["context_length"]) == (32, 77)
    assert m["descriptor_set"].startswith("moments__shapes-demo__")
    sd = m["shapes_demo"]
    assert sd["image_to_text_top1"] >= 0.9 and sd["text_to_image_top1"] >= 0.9
    # the gate is the worst frame size, each way
    assert sd["image_to_text_top1"] == min(f["image_to_text_top1"] for f in sd["frames"].values())
    assert {"32x32", "320x240", "426x240", "240x426"} <= set(sd["frames"])
    assert m["preprocess"] == {"resize_mode": "shortest", "interpolation": "area", "fill": [0, 0, 0]}
    assert m["training"]["identity"]["seed"] == 0
    assert m["verification"]["text_cosine_min"] >= 0.9999 and m["verification"]["image_cosine_min"] >= 0.9999


def test_export_draws_without_the_client_package() -> None:
    # the drawings live in moments_shapes so that the export step never imports the client (nor its gRPC code)
    import ast

    from tests.conftest import REPO

    for path in sorted((REPO / "export" / "moments_export").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not [n for n in names if n.split(".")[0] == "moments_client"], f"{path.name} imports {names}"


def test_shapes_module_is_torch_free_and_enumerable() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import moments_shapes as shapes; "
        "img = shapes.draw('red', 'circle', (320, 240), 0); "
        "assert img.shape == (240, 320, 3) and img.dtype.name == 'uint8'; "
        "assert len(shapes.all_captions()) == len(shapes.COLORS) * len(shapes.SHAPES) == 24; "
        "assert not {'torch', 'grpc', 'moments_client'} & set(sys.modules), sorted(sys.modules)"
    )
    from tests.conftest import export_env

    assert subprocess.run([sys.executable, "-c", code], env=export_env()).returncode == 0


def test_draw_is_deterministic_and_shape_is_large() -> None:
    import moments_shapes as shapes

    a = shapes.draw("blue", "square", (320, 240), 5)
    b = shapes.draw("blue", "square", (320, 240), 5)
    assert np.array_equal(a, b)
    # the shape's pixels: close to its colour
    blue = np.array(shapes.COLORS["blue"], np.float32)
    close = np.linalg.norm(a.astype(np.float32) - blue, axis=-1) < 60
    assert close.mean() > 0.03
    assert shapes.caption("red", "circle") == "a red circle"
    assert shapes.caption("orange", "cross") == "an orange cross"
    assert shapes.parse_caption("a red circle") == ("red", "circle")
    assert shapes.parse_caption("an orange cross") == ("orange", "cross")
