"""`pip install ./clients/python` from a fresh clone: the build generates the stubs (they are not committed) and
the package needs nothing of the server (no torch, no onnxruntime)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.live import REPO


def test_wheel_builds_without_stubs_and_without_server_dependencies(tmp_path: Path) -> None:
    clone = tmp_path / "clone"
    shutil.copytree(REPO / "protos", clone / "protos")
    shutil.copytree(
        REPO / "clients" / "python",
        clone / "clients" / "python",
        ignore=shutil.ignore_patterns("*_pb2*", "*.egg-info", "build", "__pycache__"),
    )
    assert not list((clone / "clients" / "python" / "moments" / "v1").glob("*_pb2*"))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(clone / "clients" / "python"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("moments_client-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = next(zf.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    for generated in ("moments_pb2.py", "moments_pb2_grpc.py", "moments_pb2.pyi"):
        assert f"moments/v1/{generated}" in names
    assert {"moments_client/client.py", "moments_client/cli/__init__.py", "moments_client/py.typed"} <= names
    assert {"moments_shapes/__init__.py", "moments_shapes/py.typed"} <= names  # sample-video's drawings
    requires_all = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    requires = [r for r in requires_all if "extra ==" not in r]  # what a plain `pip install moments-client` brings
    assert any(r.startswith("grpcio") for r in requires)
    for heavy in ("torch", "onnxruntime", "faiss", "aperturedb", "pydantic", "matplotlib"):
        assert not any(r.startswith(heavy) for r in requires), requires
    # `moments eval` needs pydantic and matplotlib, only through the eval extra
    eval_extra = [r for r in requires_all if 'extra == "eval"' in r]
    assert any(r.startswith("pydantic") for r in eval_extra) and any(r.startswith("matplotlib") for r in eval_extra)
    assert "moments_client/eval/metrics.py" in names
    assert "moments = moments_client.cli:main" in entry_points
