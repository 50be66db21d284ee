"""onnxruntime sessions for the two towers: CUDA (fp16 files when recommended) when usable, else CPU."""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from moments_server.inference.manifest import ModelManifest

log = logging.getLogger(__name__)


def cuda_usable() -> bool:
    """True when onnxruntime has the CUDA provider AND a CUDA device answers.

    Asking onnxruntime-gpu for CUDA on a machine without a GPU logs errors, so the driver is asked first.
    """
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return False
    return count.value > 0


@dataclass
class Tower:
    """One ONNX tower with its input/output names; `run` is called from one worker thread at a time."""

    name: str
    session: ort.InferenceSession
    input_name: str
    output_name: str
    precision: str
    provider: str
    fused: bool = False

    def run(self, batch: np.ndarray) -> np.ndarray:
        if self.provider == "CUDAExecutionProvider":
            # IO binding: the input is copied to the device once and the output comes back once,
            # without onnxruntime's per-call staging of numpy buffers.
            binding = self.session.io_binding()
            binding.bind_cpu_input(self.input_name, np.ascontiguousarray(batch))
            binding.bind_output(self.output_name, "cpu")
            self.session.run_with_iobinding(binding)
            out = binding.copy_outputs_to_cpu()[0]
        else:
            out = self.session.run([self.output_name], {self.input_name: batch})[0]
        return np.asarray(out, dtype=np.float32)


def optimization_level(path: Path) -> ort.GraphOptimizationLevel:
    """ORT_ENABLE_EXTENDED for fp16 graphs, ORT_ENABLE_ALL for the rest.

    onnxruntime 1.32's CPU provider segfaults while creating a session for the plain fp16 graphs at
    ORT_ENABLE_ALL: the NCHWc layout transformer that only that level adds crashes on them (measured: the
    session builds and runs with it in ``disabled_optimizers``, and at ORT_ENABLE_EXTENDED). What ORT_ENABLE_ALL
    adds over EXTENDED are layout transformations (NCHWc/NHWC) for the CPU provider's convolutions, which the
    CUDA provider (where fp16 is served) does not take by default; on the CPU (where the export verifies fp16
    graphs) the provider runs their fp16 nodes through inserted casts to fp32.
    """
    if ".fp16." in path.name:
        return ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    return ort.GraphOptimizationLevel.ORT_ENABLE_ALL


def _session(path: Path, providers: list[str], threads: int, spinning: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = optimization_level(path)
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def load_towers(
    manifest: ModelManifest, device: str, threads: int, spinning: bool = False, fused_graphs: str = "auto"
) -> tuple[Tower, Tower]:
    """Build the text and image towers. device: auto | cpu | cuda; fused_graphs: auto (on CUDA) | yes | no."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    use_cuda = device == "cuda" or (device == "auto" and cuda_usable())
    if device == "cuda" and not cuda_usable():
        raise RuntimeError("--device cuda asked for, but onnxruntime has no usable CUDA device here")
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
    precision = manifest.gpu_precision() if use_cuda else "fp32"
    # Fused attention graphs serve on CUDA (onnxruntime's fused kernels are what they are for). On the CPU they
    # measured no faster than the plain graphs (bench figure 8, ViT-B-32 on 2 cores: image 0.97x, text 0.98x),
    # so the CPU serves the plain ones; MOMENTS_FUSED_GRAPHS=yes|no overrides (config.fused_graphs).
    fused = use_cuda if fused_graphs == "auto" else fused_graphs == "yes"
    towers = []
    for tower, input_name in (("text", manifest.text_input), ("image", manifest.image_input)):
        path, served, fused_served = manifest.serving_graph(tower, precision, fused)
        session = _session(path, providers, threads, spinning)
        provider = session.get_providers()[0]
        towers.append(Tower(tower, session, input_name, manifest.output, served, provider, fused_served))
        log.info(
            "loaded %s tower %s (%s, %s) on %s",
            tower,
            path.name,
            served,
            "fused" if fused_served else "unfused",
            provider,
        )
    return towers[0], towers[1]
