"""Fused-attention variants of the towers: each ``nn.MultiheadAttention`` becomes one onnxruntime
``com.microsoft::Attention`` node, and onnxruntime's transformer optimizer then fuses LayerNorm/Gelu.

Why today's graphs fuse no attention (onnxruntime.transformers' ``FusionAttentionClip`` matches none):
with the MHA fast path off, torch's tracer writes ``F.multi_head_attention_forward`` as
- one packed in-projection MatMul whose output is split by Unsqueeze/Transpose/Squeeze/Gather, where the
  pattern wants three separate q/k/v ``MatMul -> Add`` branches from the LayerNorm output;
- ``scaled_dot_product_attention``'s scale computed at run time from ``Shape -> Cast -> Sqrt -> Div`` and
  applied as ``sqrt(scale)`` to both q and k, where the pattern wants one ``Mul`` on q;
- the out-projection as a ``Gemm`` on a 2-D reshape, where the pattern wants ``MatMul -> Add`` in 3-D.
Rather than reshaping torch's graph until a pattern matcher accepts it, the export emits the fused operator
directly: ``Attention(x, W_qkv, b_qkv)`` (``unidirectional=1`` for the causal text tower), which the CPU and
CUDA providers implement (on CUDA with its fused/flash kernels) in fp32 and fp16.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moments_export.attention import SelfAttention, swap_attention


class NotFusable(Exception):
    """The model's attention is not the packed, unmasked/causal ``nn.MultiheadAttention`` this fuses."""


class _AttentionOp(torch.autograd.Function):
    """Computes attention in torch while tracing; the ONNX exporter writes it as one Attention node."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, heads: int, causal: int) -> torch.Tensor:
        bsz, seq, width = x.shape
        qkv = (x @ w + b).view(bsz, seq, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=bool(causal))
        return y.transpose(1, 2).reshape(bsz, seq, width)

    @staticmethod
    def symbolic(g: Any, x: Any, w: Any, b: Any, heads: int, causal: int) -> Any:
        out = g.op("com.microsoft::Attention", x, w, b, num_heads_i=heads, unidirectional_i=causal)
        out.setType(x.type())
        return out


def _is_causal(mask: torch.Tensor, seq: int) -> bool:
    if mask.shape != (seq, seq):
        return False
    upper = torch.ones(seq, seq, dtype=torch.bool, device=mask.device).triu(1)
    return bool(torch.isneginf(mask[upper]).all()) and bool((mask[~upper] == 0).all())


class FusedAttention(SelfAttention):
    """onnxruntime's Attention operator in place of open_clip's ``nn.MultiheadAttention`` (no mask, or causal)."""

    refused = NotFusable

    def __init__(self, mha: nn.MultiheadAttention) -> None:
        if not mha._qkv_same_embed_dim or mha.in_proj_bias is None or mha.bias_k is not None:
            raise NotFusable("attention without one packed in-projection with bias")
        super().__init__(mha)
        # Attention's weight is [in, 3*hidden] (x @ W); torch keeps [3*hidden, in]
        self.w = nn.Parameter(mha.in_proj_weight.detach().t().contiguous(), requires_grad=False)
        self.b = nn.Parameter(mha.in_proj_bias.detach().clone(), requires_grad=False)

    def attend(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
        causal = 0
        if attn_mask is not None:
            if not _is_causal(attn_mask, x.shape[1]):
                raise NotFusable("an attention mask other than the causal one")
            causal = 1
        return _AttentionOp.apply(x, self.w, self.b, self.heads, causal)


def with_fused_attention(clip: nn.Module) -> nn.Module:
    """A copy of ``clip`` whose ``nn.MultiheadAttention`` modules are :class:`FusedAttention`."""
    fused, swapped = swap_attention(clip, FusedAttention)
    if not swapped:
        raise NotFusable(f"{type(clip).__name__} has no nn.MultiheadAttention")
    return fused


def optimize(path: str, out: str) -> dict[str, int]:
    """onnxruntime's transformer optimizer (python fusions only, opt_level 0, so the result is not tied to one
    provider): SkipLayerNormalization, LayerNormalization, BiasGelu. Returns the fused operator counts."""
    import onnx
    from onnxruntime.transformers import optimizer

    # num_heads/hidden_size only serve its attention fusion, which has nothing left to do
    opt = optimizer.optimize_model(path, model_type="clip", num_heads=0, hidden_size=0, opt_level=0)
    model = opt.model
    model.doc_string = ""
    onnx.checker.check_model(model)
    onnx.save(model, out)
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}
