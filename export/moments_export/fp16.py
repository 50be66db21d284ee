"""fp16 graphs for GPU serving: when to write them, and whether they beat fp32 on the GPU at hand.

The fp16 graphs are exported from a half-precision copy of the model (``onnx_export.half_model``), not
converted from the fp32 graph: onnxruntime's float16 converter wrote graphs that were not in SSA form on
torch 2.11 (``.../attn/Cast_3_output_0_cast_to_fp32 used as output names multiple times``: the inserted
casts are named after their input, and the attention scale feeds two blocked ``Sqrt`` nodes). The graphs
keep their I/O types (uint8 pixels / int64 ids in, float32 embedding out), so the server feeds every
variant the same arrays. fp16 is recommended for GPUs only when it measured faster than fp32 there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def gpu_available() -> bool:
    """A CUDA device that both torch and onnxruntime can use."""
    try:
        import onnxruntime as ort
        import torch

        return bool(torch.cuda.is_available()) and "CUDAExecutionProvider" in ort.get_available_providers()
    except Exception:
        return False


def compare_speed(fp32: Path, fp16: Path, input_name: str, x: np.ndarray, providers: list[str]) -> dict[str, Any]:
    from moments_export.verify import time_session

    t32 = time_session(fp32, input_name, x, providers)
    t16 = time_session(fp16, input_name, x, providers)
    return {"batch": int(x.shape[0]), "fp32_s": t32, "fp16_s": t16, "speedup": t32 / t16 if t16 > 0 else 0.0}
