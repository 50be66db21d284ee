"""``shapes-demo``: a tiny OpenCLIP model trained on the CPU on procedurally drawn coloured shapes.

No CLIP weights can be downloaded on an offline machine, yet tests and new users need search results
that mean something. This module builds a small OpenCLIP ``CLIP`` (a ModifiedResNet image tower of
width 16 at 32 px, a 2-layer width-64 text transformer, the real CLIP BPE tokenizer, context length 77),
trains it for a fixed number of steps on drawings from :mod:`moments_shapes` captioned
"a red circle" (and a few paraphrases), and hands it back to the exporter, which exports it through
exactly the same path as a pretrained model.

Deterministic for a given seed on a given machine (torch's CPU kernels may reduce in a different order
on another CPU or thread count).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import torch.nn.functional as F

import moments_shapes as shapes
from moments_server.framing import Framing

MODEL_NAME = "shapes-demo"

#: The open_clip model config of shapes-demo (``open_clip.model.CLIP(**SHAPES_DEMO_CFG)``).
SHAPES_DEMO_CFG: dict[str, Any] = {
    "embed_dim": 64,
    # a small ModifiedResNet (conv stem, one bottleneck per stage, attention pooling): at 32 px it learns
    # shapes several times faster on a CPU than a ViT of the same cost
    "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

#: Paraphrases used in training, so queries need not be exactly "a red circle".
TEMPLATES: tuple[str, ...] = (
    "{ac} {c} {s}",
    "{ac} {c} {s}",
    "{c} {s}",
    "a photo of {ac} {c} {s}",
    "{a_s} {s} that is {c}",
    "the {c} {s}",
)


def fill(template: str, color: str, shape: str) -> str:
    """A template with its colour, shape and articles: ``fill("{ac} {c} {s}", "orange", "cross")``."""
    return template.format(c=color, s=shape, ac=shapes.article(color), a_s=shapes.article(shape))


MEAN = (0.48145466, 0.4578275, 0.40821073)
# The server's framing of pictures for this model (pinned in its manifest): the centre square, scaled by
# swscale's area filter, as video frames and query images are at search time. Training images go through it.
FRAMING = Framing(32, resize_mode="shortest", interpolation="area")
# Frame shapes (width:height) and short sides the training frames are drawn at before framing.
TRAIN_ASPECTS = ((1, 1), (4, 3), (16, 9), (3, 4), (9, 16))
TRAIN_SHORT_SIDES = (32, 128)
STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class TrainSettings:
    seed: int = 0
    steps: int = 500
    batch: int = 256
    lr: float = 3e-3
    warmup: int = 60
    weight_decay: float = 0.05
    train_images: int = 12288
    eval_per_class: int = 10


def build_model() -> torch.nn.Module:
    from open_clip.model import CLIP
    from open_clip.transform import PreprocessCfg

    model = CLIP(**SHAPES_DEMO_CFG)
    model.visual.preprocess_cfg = {
        **PreprocessCfg().__dict__,
        "size": (32, 32),
        "mean": MEAN,
        "std": STD,
        "interpolation": FRAMING.interpolation,
        "resize_mode": FRAMING.resize_mode,
    }
    return model


def as_decoded(rgb: np.ndarray) -> av.VideoFrame:
    """A drawing as the video decoder hands frames over: 4:2:0 YUV (the chroma of most video)."""
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")


def framed(rgb: np.ndarray) -> np.ndarray:
    """A drawing brought to the model's input exactly as the server brings a decoded video frame."""
    return FRAMING.frame(as_decoded(rgb))


def draw_dataset(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """``n`` training images (N, size, size, 3) uint8 and their caption index in ``shapes.all_captions()``.

    Each is drawn as a video frame of a random shape (:data:`TRAIN_ASPECTS`) and short side, turned into
    4:2:0 YUV and framed by :data:`FRAMING`: the pictures the server feeds the model.
    """
    assert size == FRAMING.size
    caps = shapes.all_captions()
    g = np.random.default_rng(seed)
    labels = np.arange(n) % len(caps)
    g.shuffle(labels)
    out = np.empty((n, size, size, 3), np.uint8)
    for i, lab in enumerate(labels):
        c, s, _ = caps[int(lab)]
        aw, ah = TRAIN_ASPECTS[int(g.integers(len(TRAIN_ASPECTS)))]
        short = int(g.integers(TRAIN_SHORT_SIDES[0], TRAIN_SHORT_SIDES[1] + 1))
        wh = (round(short * aw / ah), short) if aw >= ah else (short, round(short * ah / aw))
        out[i] = framed(shapes.draw(c, s, wh, g))
    return out, labels.astype(np.int64)


def preprocess(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC -> normalised float NCHW, exactly what the exported image graph does."""
    x = pixels.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _lr_at(step: int, st: TrainSettings) -> float:
    if step < st.warmup:
        return st.lr * (step + 1) / st.warmup
    t = (step - st.warmup) / max(1, st.steps - st.warmup)
    return st.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t)))


def train(
    st: TrainSettings,
    progress: Callable[[int, int, float], None] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train shapes-demo; returns the model (eval mode) and training facts for the manifest."""
    from open_clip import get_tokenizer

    t0 = time.monotonic()
    torch.manual_seed(st.seed)
    np.random.seed(st.seed)
    model: Any = build_model()
    tok = get_tokenizer("ViT-B-32")  # the real CLIP BPE tokenizer, context length 77
    caps = shapes.all_captions()
    n_cls = len(caps)
    # token ids of every (template, class): [T, C, 77]
    tmpl_ids = torch.stack([tok([fill(t, c, s) for c, s, _ in caps]) for t in TEMPLATES])

    images, labels = draw_dataset(st.train_images, st.seed + 1)
    x_all = preprocess(torch.from_numpy(images))
    y_all = torch.from_numpy(labels)
    t_data = time.monotonic() - t0

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": st.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=st.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    gen = torch.Generator().manual_seed(st.seed + 2)
    model.train()
    loss_v = float("nan")
    for step in range(st.steps):
        for grp in opt.param_groups:
            grp["lr"] = _lr_at(step, st)
        idx = torch.randint(0, x_all.shape[0], (st.batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        # light augmentation: horizontal/vertical flips keep the caption true
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(3)
        if torch.rand((), generator=gen) < 0.5:
            x = x.flip(2)
        t_choice = torch.randint(0, len(TEMPLATES), (n_cls,), generator=gen)
        text = tmpl_ids[t_choice, torch.arange(n_cls)]
        img_e = F.normalize(model.encode_image(x), dim=-1)
        txt_e = F.normalize(model.encode_text(text), dim=-1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img_e @ txt_e.t()  # [B, C]
        loss_i2t = F.cross_entropy(logits, y)
        # text -> image: each caption present in the batch against all images, multi-positive target
        pos = (y[None, :] == torch.arange(n_cls)[:, None]).float()  # [C, B]
        present = pos.sum(1) > 0
        lt = logits.t()[present]
        target = pos[present] / pos[present].sum(1, keepdim=True)
        loss_t2i = -(target * F.log_softmax(lt, dim=1)).sum(1).mean()
        loss = 0.5 * (loss_i2t + loss_t2i)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if progress is not None:
            progress(step + 1, st.steps, loss_v)
    model.eval()
    facts: dict[str, Any] = {
        "seed": st.seed,
        "steps": st.steps,
        "batch": st.batch,
        "lr": st.lr,
        "train_images": st.train_images,
        "final_loss": round(loss_v, 4),
        "data_s": round(t_data, 2),
        "train_s": round(time.monotonic() - t0, 2),
        "captions": [cap for _, _, cap in caps],
        "templates": list(TEMPLATES),
    }
    return model, facts


def top1_both_ways(img_emb: np.ndarray, txt_emb: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Image->text top-1 over all captions, and text->image top-1 (is the best image of that caption?)."""
    sims = img_emb @ txt_emb.T  # [N, C]
    i2t = float((sims.argmax(1) == labels).mean())
    t2i = float((labels[sims.argmax(0)] == np.arange(txt_emb.shape[0])).mean())
    return i2t, t2i


# Frame sizes the export reports and gates on (each >= 0.9 both ways): the model's own input, and video
# frames of the common shapes (4:3, 16:9 landscape, 9:16 portrait) as the server frames them.
EVAL_FRAMES: dict[str, tuple[int, int] | None] = {
    "32x32": None,
    "320x240": (320, 240),
    "426x240": (426, 240),
    "1280x720": (1280, 720),
    "240x426": (240, 426),
}


def heldout_frames(seed: int, per_class: int, frame: tuple[int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Held-out drawings: at the model's input size directly (``frame=None``), or drawn as a ``frame``
    (width, height) video frame and framed as the server frames decoded video."""
    caps = shapes.all_captions()
    g = np.random.default_rng(seed)
    imgs, labels = [], []
    for _ in range(per_class):
        for j, (c, s, _) in enumerate(caps):
            if frame is None:
                imgs.append(shapes.draw(c, s, FRAMING.size, g))
            else:
                imgs.append(framed(shapes.draw(c, s, frame, g)))
            labels.append(j)
    return np.stack(imgs), np.array(labels)


def evaluate_onnx(model_dir: Path, seed: int = 0, per_class: int = 20) -> dict[str, Any]:
    """Top-1 both ways on held-out drawings, measured on the exported graphs with onnxruntime.

    ``frames`` has both ways per frame size of :data:`EVAL_FRAMES` (video frames framed as the server
    frames them); ``image_to_text_top1`` / ``text_to_image_top1`` are the worst of them (the export's gate).
    """
    import onnxruntime as ort
    from tokenizers import Tokenizer

    caps = [cap for _, _, cap in shapes.all_captions()]
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = np.array([e.ids for e in tok.encode_batch(caps)], dtype=np.int64)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    text = ort.InferenceSession(str(model_dir / "text.onnx"), so, providers=["CPUExecutionProvider"])
    image = ort.InferenceSession(str(model_dir / "image.onnx"), so, providers=["CPUExecutionProvider"])
    (te,) = text.run(["embedding"], {"input_ids": ids})
    eval_seed = seed + 1_000_003
    out: dict[str, Any] = {"captions": len(caps), "eval_seed": eval_seed, "frames": {}}
    for name, frame in EVAL_FRAMES.items():
        imgs, labels = heldout_frames(eval_seed, per_class if frame is None else per_class // 2, frame)
        (ie,) = image.run(["embedding"], {"pixels": imgs})
        i2t, t2i = top1_both_ways(ie, te, labels)
        out["frames"][name] = {
            "images": len(labels),
            "image_to_text_top1": round(i2t, 4),
            "text_to_image_top1": round(t2i, 4),
        }
    frames = out["frames"].values()
    out["heldout_images"] = sum(f["images"] for f in frames)
    # the gate: the worst frame size, each way
    out["image_to_text_top1"] = min(f["image_to_text_top1"] for f in frames)
    out["text_to_image_top1"] = min(f["text_to_image_top1"] for f in frames)
    return out
