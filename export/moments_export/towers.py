"""The torch modules that become ``text.onnx`` and ``image.onnx``.

Both return L2-normalised float32 embeddings whatever the model's internal dtype, so the fp32 and
fp16 graphs have identical inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn


def trim_blocker(clip: Any) -> str | None:
    """Why the text tower cannot run on ids cut after their last token (None: it can).

    With a causal attention mask, a token attends only to the tokens before it, so the padding after the
    end-of-text token changes nothing that argmax/eos pooling reads: the tower can run on the batch's
    longest text instead of all context_length positions (a query of 8 tokens instead of 77). This holds
    for open_clip's CLIP text tower (token_embedding, positional_embedding, transformer, attn_mask); other
    towers (CustomTextCLIP's, HF encoders, a pad mask, a class token, first/last pooling) keep the fixed
    length. The export verifies the cut graph against torch on full-length ids either way."""
    needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
    missing = [a for a in needed if not hasattr(clip, a)]
    if missing:
        return f"{type(clip).__name__} has no {', '.join(missing)} (not open_clip's CLIP text tower)"
    mask = clip.attn_mask
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
        return "the text tower has no causal attention mask"
    upper = torch.ones_like(mask, dtype=torch.bool).triu(1)
    if not (bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())):
        return "the text tower's attention mask is not causal"
    pool = getattr(clip, "text_pool_type", "argmax")
    if pool not in ("argmax", "eos"):
        return f"text pooling {pool!r} reads a position the padding decides"
    return None


class TextTower(nn.Module):
    """``input_ids`` int64 [batch, sequence] -> ``embedding`` float32 [batch, dim], unit length.

    `trim`: the graph takes any sequence up to context_length (ids cut after the batch's last token, see
    `trim_blocker`); otherwise exactly context_length."""

    def __init__(self, clip: Any, trim: bool = False) -> None:
        super().__init__()
        self.clip = clip
        self.trim = trim

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if not self.trim:
            return F.normalize(self.clip.encode_text(input_ids).float(), dim=-1)
        # open_clip's CLIP.encode_text with the positional embedding and the causal mask cut to the input's
        # length (it adds all context_length positions, which fixes the length)
        clip = self.clip
        # positions through arange + gather: a Python slice [:seq] is traced with seq fixed to the example's
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        cast = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(input_ids).to(cast)
        x = x + clip.positional_embedding[pos].to(cast)
        x = clip.transformer(x, attn_mask=clip.attn_mask[pos][:, pos])
        x = clip.ln_final(x)
        x = text_global_pool(
            x, input_ids, getattr(clip, "text_pool_type", "argmax"), eos_token_id=getattr(clip, "text_eos_id", None)
        )
        if clip.text_projection is not None:
            x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
        return F.normalize(x.float(), dim=-1)


class ImageTower(nn.Module):
    """``pixels`` uint8 [batch, H, W, 3] RGB -> ``embedding`` float32 [batch, dim], unit length.

    Scaling to [0, 1] and the model's own mean/std normalisation happen inside the graph.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, clip: Any, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype) -> None:
        super().__init__()
        self.clip = clip
        self.dtype = dtype
        # fold /255 and mean/std into one multiply-add: (x/255 - m)/s = x * (1/(255 s)) - m/s
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", (1.0 / (255.0 * s)).to(dtype), persistent=False)
        self.register_buffer("shift", (-m / s).to(dtype), persistent=False)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.permute(0, 3, 1, 2).to(self.dtype)
        x = x * self.scale + self.shift
        y = self.clip.encode_image(x)
        return F.normalize(y.float(), dim=-1)


def torch_image_reference(clip: Any, pixels: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """The reference the ONNX image graph is checked against: open_clip's own normalisation, fp32."""
    x = pixels.permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        return F.normalize(clip.encode_image((x - m) / s).float(), dim=-1)


def torch_text_reference(clip: Any, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(clip.encode_text(ids).float(), dim=-1)
