"""TorchScript-based ONNX export (opset 17) of the two towers with a dynamic batch axis."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import onnx
import torch

from moments_export.towers import ImageTower, TextTower

OPSET = 17
TEXT_INPUT = "input_ids"
IMAGE_INPUT = "pixels"
OUTPUT = "embedding"


def _export(module: torch.nn.Module, example: torch.Tensor, input_name: str, path: Path, dim: int) -> None:
    module.eval()
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings and the exporter's deprecation notice
        torch.onnx.export(
            module,
            (example,),
            buf,  # type: ignore[arg-type]
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_axes={input_name: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
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


def export_text(clip: torch.nn.Module, context_length: int, dim: int, path: Path) -> None:
    torch.backends.mha.set_fastpath_enabled(False)
    example = torch.zeros((2, context_length), dtype=torch.long)
    example[:, 0] = 49406
    example[:, 1] = 320
    example[:, 2] = 49407
    _export(TextTower(clip), example, TEXT_INPUT, path, dim)


def export_image(
    clip: torch.nn.Module, image_size: int, mean: tuple[float, ...], std: tuple[float, ...], dim: int, path: Path
) -> None:
    # the fast path of nn.MultiheadAttention does not trace to opset 17
    torch.backends.mha.set_fastpath_enabled(False)
    example = torch.randint(0, 256, (2, image_size, image_size, 3), dtype=torch.uint8)
    _export(ImageTower(clip, mean, std, torch.float32), example, IMAGE_INPUT, path, dim)
