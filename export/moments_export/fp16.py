"""fp16 variants of the exported graphs for GPU serving, with float32 inputs/outputs kept as they are.

The conversion keeps the graph's I/O types (uint8 pixels / int64 ids in, float32 embedding out), so the
server feeds both variants the same arrays. Whether fp16 is recommended for GPUs is decided by
measuring: only when the fp16 graphs are faster than fp32 on the GPU at hand does the manifest say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx


def gpu_available() -> bool:
    """A CUDA device that both torch and onnxruntime can use."""
    try:
        import onnxruntime as ort
        import torch

        return bool(torch.cuda.is_available()) and "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


def convert(src: Path, dst: Path) -> None:
    """Write an fp16 copy of ``src``; normalisation, softmax-sensitive reductions and the final
    L2 normalisation stay in fp32 where the converter's default block list says so."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    block = sorted(set(DEFAULT_OP_BLOCK_LIST) | {"ReduceL2", "ReduceSumSquare", "Div", "Sqrt", "Pow"})
    out = convert_float_to_float16(model, keep_io_types=True, op_block_list=block, disable_shape_infer=False)
    _toposort(out.graph)
    onnx.checker.check_model(out)
    tmp = dst.with_suffix(dst.suffix + ".tmp")
    onnx.save(out, str(tmp))
    tmp.replace(dst)


def _toposort(graph: onnx.GraphProto) -> None:
    """The converter appends Cast nodes out of order; put the nodes back in topological order."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for node in pending:
            if all(i in available for i in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                rest.append(node)
        if len(rest) == len(pending):
            raise ValueError(f"graph has a cycle or a missing input near {rest[0].name}")
        pending = rest
    del graph.node[:]
    graph.node.extend(ordered)


def compare_speed(fp32: Path, fp16: Path, input_name: str, x: np.ndarray, providers: list[str]) -> dict[str, Any]:
    from moments_export.verify import time_session

    t32 = time_session(fp32, input_name, x, providers)
    t16 = time_session(fp16, input_name, x, providers)
    return {"batch": int(x.shape[0]), "fp32_s": t32, "fp16_s": t16, "speedup": t32 / t16 if t16 > 0 else 0.0}
