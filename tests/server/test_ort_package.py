"""`make install`'s choice between onnxruntime and onnxruntime-gpu (server/moments_server/ort_package.py).

The detection is exercised with a fake `nvidia-smi` on a PATH of its own (the selection logic only; the GPU
install itself is checked on a GPU machine)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from moments_server import ort_package
from moments_server.ort_package import Gpu, choose
from tests.conftest import REPO

SCRIPT = Path(ort_package.__file__)

SMI_HEADER = """+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.95.05              Driver Version: 580.95.05      CUDA Version: {cuda}     |
+-----------------------------------------------------------------------------------------+"""


def fake_smi(tmp_path: Path, cuda: str = "13.0", names: str = "NVIDIA H200", rc: int = 0) -> Path:
    """A directory holding an `nvidia-smi` that answers like the real one (or fails with ``rc``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    header = SMI_HEADER.format(cuda=cuda)
    smi.write_text(
        "#!/bin/sh\n"
        f"[ {rc} -ne 0 ] && {{ echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver' >&2; exit {rc}; }}\n"  # noqa: E501
        f'case "$1" in --query-gpu=*) printf "%s\\n" "{names}";; *) cat <<EOF\n{header}\nEOF\n;; esac\n'
    )
    smi.chmod(0o755)
    return bin_dir


def run_script(path_dir: Path, gpu: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{path_dir}:/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    if gpu is not None:
        env["GPU"] = gpu
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


def test_nvidia_smi_that_answers_selects_the_gpu_build(tmp_path: Path) -> None:
    bin_dir = fake_smi(tmp_path, cuda="13.0")
    gpu = ort_package.from_nvidia_smi(lambda name: str(bin_dir / name) if name == "nvidia-smi" else None)
    assert gpu == Gpu("NVIDIA H200", 13, "nvidia-smi")
    c = choose({}, detect=lambda: gpu)
    assert c.flavour == "gpu" and "onnxruntime-gpu[cuda,cudnn]==1.31.1" in c.why


def test_the_script_prints_the_extra(tmp_path: Path) -> None:
    res = run_script(fake_smi(tmp_path, cuda="13.1"))
    assert res.returncode == 0, res.stderr
    assert res.stdout == "gpu\n"
    assert "NVIDIA H200 (nvidia-smi, CUDA 13)" in res.stderr


def test_nvidia_smi_that_fails_is_no_gpu(tmp_path: Path) -> None:
    bin_dir = fake_smi(tmp_path, rc=9)
    assert ort_package.from_nvidia_smi(lambda name: str(bin_dir / name)) is None
    # no nvidia-smi at all, and this machine's libcuda (none here) decides
    assert ort_package.from_nvidia_smi(lambda name: None) is None
    assert ort_package.from_libcuda("libcuda-that-does-not-exist.so.1") is None


def test_old_driver_gets_the_cpu_build_with_the_reason(tmp_path: Path) -> None:
    c = choose({}, detect=lambda: Gpu("Tesla T4", 12, "nvidia-smi"))
    assert c.flavour == "cpu"
    assert "CUDA 12" in c.why and "GPU=1" in c.why


def test_override_wins(tmp_path: Path) -> None:
    no_gpu = tmp_path / "empty"
    no_gpu.mkdir()
    assert choose({"GPU": "1"}, detect=lambda: None).flavour == "gpu"
    assert choose({"GPU": "0"}, detect=lambda: Gpu("NVIDIA H200", 13, "nvidia-smi")).flavour == "cpu"
    assert run_script(fake_smi(tmp_path, cuda="13.0"), gpu="0").stdout == "cpu\n"
    assert run_script(no_gpu, gpu="1").stdout == "gpu\n"
    bad = run_script(no_gpu, gpu="yes")
    assert bad.returncode == 2 and "GPU must be 0 or 1" in bad.stderr


def test_no_gpu_means_cpu() -> None:
    c = choose({}, detect=lambda: None)
    assert c.flavour == "cpu" and "no NVIDIA GPU" in c.why


@pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA driver")
def test_this_cpu_machine_gets_the_cpu_build(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_script(empty)
    assert res.returncode == 0 and res.stdout == "cpu\n"


def test_extras_match_the_script() -> None:
    """pyproject's gpu extra is the package the script names; the cpu extra is the pinned onnxruntime."""
    import tomllib

    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu"] == [ort_package.GPU_PACKAGE]
    assert extras["cpu"] == ["onnxruntime==1.32.0"]
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.startswith("onnxruntime")], "the runtime comes from one extra, never both"
