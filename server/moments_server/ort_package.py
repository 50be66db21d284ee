"""Which onnxruntime build `make install` puts in the venv: ``cpu`` (onnxruntime) or ``gpu`` (onnxruntime-gpu with
the CUDA and cuDNN libraries from their pip packages). Never both: they install into the same ``onnxruntime``
package directory and overwrite each other's files.

    python server/moments_server/ort_package.py     # prints cpu or gpu (the pyproject extra); why on stderr

``GPU=1`` or ``GPU=0`` in the environment decides; otherwise a usable NVIDIA GPU is looked for: ``nvidia-smi``
answers with at least one GPU, or ``libcuda.so.1`` loads and counts a device. The onnxruntime-gpu build on PyPI
(``gpu`` extra in pyproject.toml) is built for CUDA 13, so a driver that supports an older CUDA only gets the
CPU build, with the reason. Standard library only: it runs before the venv has anything in it.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

GPU_PACKAGE = "onnxruntime-gpu[cuda,cudnn]==1.31.1"  # keep in step with the gpu extra in pyproject.toml
CUDA_MAJOR = 13  # what that build needs from the driver (NVIDIA driver >= 580)


@dataclass(frozen=True)
class Gpu:
    name: str
    cuda_major: int | None  # the newest CUDA the driver supports; None when it did not say
    via: str  # "nvidia-smi" | "libcuda"


@dataclass(frozen=True)
class Choice:
    flavour: str  # "cpu" | "gpu"
    why: str


def from_nvidia_smi(which: Callable[[str], str | None] = shutil.which) -> Gpu | None:
    exe = which("nvidia-smi")
    if exe is None:
        return None
    try:
        names = subprocess.run(
            [exe, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
        if names.returncode != 0 or not names.stdout.strip():
            return None
        header = subprocess.run([exe], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r"CUDA Version:\s*(\d+)\.\d+", header)
    return Gpu(names.stdout.strip().splitlines()[0].strip(), int(m.group(1)) if m else None, "nvidia-smi")


def from_libcuda(library: str = "libcuda.so.1") -> Gpu | None:
    try:
        cuda = ctypes.CDLL(library)
    except OSError:
        return None
    count, version = ctypes.c_int(0), ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return None
    major = version.value // 1000 if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 else None
    return Gpu(f"{count.value} CUDA device(s)", major, "libcuda")


def choose(
    env: Mapping[str, str],
    detect: Callable[[], Gpu | None] = lambda: from_nvidia_smi() or from_libcuda(),
) -> Choice:
    forced = env.get("GPU", "").strip()
    if forced == "1":
        return Choice("gpu", f"GPU=1: {GPU_PACKAGE}")
    if forced == "0":
        return Choice("cpu", "GPU=0: onnxruntime (CPU)")
    if forced:
        raise ValueError(f"GPU must be 0 or 1 (or unset to detect), not {forced!r}")
    gpu = detect()
    if gpu is None:
        return Choice("cpu", "no NVIDIA GPU answered (nvidia-smi, libcuda): onnxruntime (CPU)")
    if gpu.cuda_major is not None and gpu.cuda_major < CUDA_MAJOR:
        return Choice(
            "cpu",
            f"{gpu.name} found ({gpu.via}), but its driver supports CUDA {gpu.cuda_major} and {GPU_PACKAGE} "
            f"needs CUDA {CUDA_MAJOR} (driver >= 580): onnxruntime (CPU). Update the driver, or GPU=1 to install "
            "the GPU build anyway",
        )
    cuda = f"CUDA {gpu.cuda_major}" if gpu.cuda_major is not None else "CUDA version not reported"
    return Choice("gpu", f"{gpu.name} ({gpu.via}, {cuda}): {GPU_PACKAGE}")


def main() -> int:
    try:
        c = choose(os.environ)
    except ValueError as e:
        print(f"ort_package: {e}", file=sys.stderr)
        return 2
    print(f"onnxruntime build: {c.flavour} ({c.why})", file=sys.stderr)
    print(c.flavour)
    return 0


if __name__ == "__main__":
    sys.exit(main())
