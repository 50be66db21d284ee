"""The torch modules that become ``text.onnx`` and ``image.onnx``.

Both return L2-normalised float32 embeddings whatever the model's internal dtype, so the fp32 and
fp16 graphs have identical inputs and outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class TextTower(nn.Module):
    """``input_ids`` int64 [batch, context_length] -> ``embedding`` float32 [batch, dim], unit length."""

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.clip.encode_text(input_ids)
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
