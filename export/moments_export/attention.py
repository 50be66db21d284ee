"""Stand-ins for open_clip's ``nn.MultiheadAttention`` in the exported graphs, and swapping them in.

open_clip calls its attention as ``attn(x, x, x, need_weights=False, attn_mask=None|causal)``;
:class:`SelfAttention` takes that call, and a subclass computes the attention itself: :class:`DynamicAttention`
here, and ``fused.FusedAttention`` (onnxruntime's Attention operator).

DynamicAttention is for the trimmed text graphs: torch's ``nn.MultiheadAttention`` does not trace with a
dynamic sequence length: the TorchScript exporter (torch 2.14, opset 17) writes its reshapes with the
example's length as a constant, so a graph traced at 8 tokens refuses 77 ("cannot reshape {77,1,32} to
{8,2,16}"), with or without a mask. DynamicAttention computes the same thing from the same weights with
reshapes that name only the model's constants (heads, head width); every length comes from the tensors at
run time. The export verifies the result against open_clip's own forward at full length (verify.verify_pair).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SelfAttention(nn.Module):
    """The call open_clip makes of an ``nn.MultiheadAttention``; subclasses implement `attend`."""

    refused: type[Exception] = ValueError  # what a call this stand-in cannot compute raises

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        super().__init__()
        self.heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.out_proj = mha.out_proj

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        """[batch, seq, embed] -> the heads' outputs, [batch, seq, embed] (before out_proj)."""
        raise NotImplementedError

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, None]:
        if key is not query or value is not query or kwargs.get("key_padding_mask") is not None:
            raise self.refused("only self-attention without a padding mask")
        x = query if self.batch_first else query.transpose(0, 1)
        y = self.out_proj(self.attend(x, attn_mask))
        return (y if self.batch_first else y.transpose(0, 1)), None


class DynamicAttention(SelfAttention):
    def __init__(self, mha: nn.MultiheadAttention) -> None:
        if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.dropout:
            raise ValueError("attention without one packed in-projection, or with bias_k or dropout")
        super().__init__(mha)
        self.head_dim = mha.embed_dim // mha.num_heads
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2) for t in (q, k, v))
        scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-1, -2)  # [batch, heads, seq, seq]
        if attn_mask is not None:
            scores = scores + attn_mask.to(scores.dtype)
        return (scores.softmax(dim=-1) @ v).transpose(1, 2).flatten(2)


def swap_attention(clip: nn.Module, make: Callable[[nn.MultiheadAttention], nn.Module]) -> tuple[nn.Module, int]:
    """A copy of ``clip`` whose ``nn.MultiheadAttention`` modules are ``make(module)``, and how many there were."""
    out = copy.deepcopy(clip)
    swapped = 0
    for module in list(out.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, make(child))
                swapped += 1
    return out.eval(), swapped


def with_dynamic_attention(clip: nn.Module) -> nn.Module:
    """A copy of ``clip`` whose ``nn.MultiheadAttention`` modules are :class:`DynamicAttention`."""
    return swap_attention(clip, DynamicAttention)[0]
