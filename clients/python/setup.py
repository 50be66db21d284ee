"""Build hook: generate the gRPC stubs (moments/v1/*_pb2*.py[i]) from the repo's protos/ when they are missing
or older than the proto, so that `pip install ./clients/python` works from a fresh clone (the stubs are not
committed). The metadata lives in pyproject.toml; grpcio-tools is a build requirement there."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
PROTO = Path("moments") / "v1" / "moments.proto"
OUTPUTS = [HERE / "moments" / "v1" / name for name in ("moments_pb2.py", "moments_pb2_grpc.py", "moments_pb2.pyi")]
# The repo's protos/ (a checkout), or a copy beside this file (an sdist made from a checkout).
PROTO_ROOTS = [HERE.parent.parent / "protos", HERE / "protos"]


def generate_stubs() -> None:
    root = next((r for r in PROTO_ROOTS if (r / PROTO).is_file()), None)
    if root is None:
        if all(p.is_file() for p in OUTPUTS):
            return  # an sdist with its stubs already generated
        raise SystemExit(
            f"moments-client: {PROTO} not found under {[str(r) for r in PROTO_ROOTS]}; "
            "build from a checkout of the Moments repository"
        )
    proto_mtime = (root / PROTO).stat().st_mtime
    if all(p.is_file() and p.stat().st_mtime >= proto_mtime for p in OUTPUTS):
        return
    from importlib.resources import files

    from grpc_tools import protoc

    well_known = str(files("grpc_tools") / "_proto")
    args = [
        "grpc_tools.protoc",
        f"-I{root}",
        f"-I{well_known}",
        f"--python_out={HERE}",
        f"--grpc_python_out={HERE}",
        f"--pyi_out={HERE}",
        str(root / PROTO),
    ]
    print("moments-client: generating stubs:", " ".join(args[1:]), file=sys.stderr)
    if protoc.main(args) != 0:
        raise SystemExit("moments-client: protoc failed")


class BuildPy(build_py):
    def run(self) -> None:
        generate_stubs()
        super().run()


class SDist(sdist):
    def run(self) -> None:
        generate_stubs()
        super().run()


setup(cmdclass={"build_py": BuildPy, "sdist": SDist})
