"""TorchScript-based ONNX export (opset 17) of the two towers with a dynamic batch axis.

Four variants: fp32 or fp16 (exported from a half-precision copy of the model, on CUDA when present), each
plain or with fused attention (:mod:`moments_export.fused`). The plain fp32 graphs are what the model's
fingerprint is computed from; the others are optional serving variants listed beside them in the manifest.
"""

from __future__ import annotations

import copy
import io
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from moments_export.attention import with_dynamic_attention
from moments_export.fused import FusedAttention
from moments_export.towers import ImageTower, TextTower, trim_blocker

OPSET = 17
TEXT_INPUT = "input_ids"
IMAGE_INPUT = "pixels"
OUTPUT = "embedding"
MS_DOMAIN = "com.microsoft"


def _export(
    module: torch.nn.Module, example: torch.Tensor, input_name: str, path: Path, dim: int, axes: dict[int, str]
) -> None:
    module.eval()
    buf = io.BytesIO()
    fused = any(isinstance(m, FusedAttention) for m in module.modules())
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buf,  # type: ignore[arg-type]
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_axes={input_name: axes, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
            custom_opsets={MS_DOMAIN: 1} if fused else None,
        )
    model = onnx.load_from_string(buf.getvalue())
    # the tracer leaves the embedding width symbolic ("Divembedding_dim_1"); it is a constant
    out_dims = model.graph.output[0].type.tensor_type.shape.dim
    out_dims[1].Clear()
    out_dims[1].dim_value = dim
    # reproducible bytes: no producer version noise beyond what torch writes
    model.doc_string = ""
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(path)


def _device(clip: torch.nn.Module) -> torch.device:
    return next(clip.parameters()).device


def export_text(clip: torch.nn.Module, context_length: int, dim: int, path: Path) -> bool:
    """Export the text tower; True when its graph takes ids cut after the batch's last token (a dynamic
    `sequence` axis, towers.trim_blocker), False when it takes exactly context_length."""
    torch.backends.mha.set_fastpath_enabled(False)
    trim = trim_blocker(clip) is None
    # traced at a length below context_length, so that nothing in a trimmed graph is fixed to the full one
    example = torch.zeros((2, 8 if trim else context_length), dtype=torch.long)
    example[:, 0] = 49406
    example[:, 1] = 320
    example[:, 2] = 49407
    axes = {0: "batch", 1: "sequence"} if trim else {0: "batch"}
    if trim and not any(isinstance(m, FusedAttention) for m in clip.modules()):
        clip = with_dynamic_attention(clip)  # nn.MultiheadAttention traces with the example's length fixed
    _export(TextTower(clip, trim), example.to(_device(clip)), TEXT_INPUT, path, dim, axes)
    return trim


def export_image(
    clip: torch.nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], dim: int, path: Path
) -> None:
    # the fast path of nn.MultiheadAttention does not trace to opset 17
    torch.backends.mha.set_fastpath_enabled(False)
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    dtype = next(clip.parameters()).dtype
    tower = ImageTower(clip, mean, std, dtype).to(_device(clip))
    _export(tower, example.to(_device(clip)), IMAGE_INPUT, path, dim, {0: "batch"})


def half_model(clip: torch.nn.Module) -> torch.nn.Module:
    """A half-precision copy of ``clip`` on CUDA when torch has a device, else on the CPU (torch runs every
    op of these towers in fp16 on the CPU too, which is all tracing needs)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return copy.deepcopy(clip).to(device).half().eval()


def export_variant(
    clip: torch.nn.Module,
    loaded: Any,
    text_path: Path,
    image_path: Path,
    fused: bool,
) -> dict[str, Any]:
    """Export the towers of ``clip`` (fp32, or a :func:`half_model`) as one variant; fused variants go through
    onnxruntime's transformer optimizer afterwards. Returns what was fused (operator counts per tower)."""
    from moments_export import fused as fz

    model = fz.with_fused_attention(clip) if fused else clip
    export_text(model, loaded.context_length, loaded.embed_dim, text_path)
    export_image(model, loaded.image_size, loaded.mean, loaded.std, loaded.embed_dim, image_path)
    if not fused:
        return {}
    ops = {}
    for tower, path in (("text", text_path), ("image", image_path)):
        ops[tower] = fz.optimize(str(path), str(path))
    return ops
