"""What a lent GPU machine lacks, packed to carry there: `python -m tests.bench.gpu_carry [--list] [--out DIR]`.

The card's image (../shared/gpu/README.md) has Python 3.12, torch 2.11 (cu130) and ON_THE_CARD below, reaches
no registry and takes 64 MiB per device call. This takes the rest of what the server, the export and the GPU
checks import: pyproject.toml's pins, and what those require at the versions installed and tested here, as
cp312 wheels; unpacks onnxruntime-gpu (its TensorRT provider needs libraries the card lacks; the CUDA and cuDNN
libraries come from the card's torch); packs it all with xz and splits it into parts of PART_BYTES, one device
call each. Into DIR (default .gpu-carry/, git-ignored) it writes the parts, their sha256, unpack.sh (sourced on
the card) and steps.txt: the exact calls (tests/bench/card_check.sh runs the checks), with the generated
protobuf stubs the server imports (git-ignored, so a `run` does not bring them) carried beside.
tests/bench/test_gpu_carry.py checks that every import of the server, the export and the checks is carried or
on the card: the list in ../shared/gpu/prepare.sh predates uvloop and PySceneDetect/OpenCV, so the server
would not have started there.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.bench.common import REPO

CARD_PYTHON = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PART_BYTES = 58 * 2**20  # a call carries 64 MiB in all: the part, the tree (~3 MB) and the stubs
# The card's versions of what the project pins too: a pin whose major.minor differs is carried (first on
# PYTHONPATH wins: the generated code needs protobuf 6). The rest of ON_THE_CARD is used as it is, torch and
# torchvision included: the card's CUDA build is the point, and the export must work on its torch 2.11.
CARD_VERSIONS = {"onnx": "1.23", "onnxruntime": "1.30", "grpcio": "1.84", "protobuf": "7.36"}
ON_THE_CARD = frozenset(
    canonicalize_name(n)
    for n in (
        # listed in ../shared/gpu/README.md
        *CARD_VERSIONS,
        *("torch", "numpy", "pillow", "tokenizers", "rich", "prometheus-client"),
        # what torch, open_clip and rich require: the export and the server ran there on 2026-12-04 with only
        # prepare.sh's list carried, so the image has them
        *("torchvision", "timm", "huggingface-hub", "safetensors", "regex", "pyyaml", "markdown-it-py", "mdurl"),
        *("pygments", "typing-extensions", "filelock", "fsspec", "sympy", "mpmath", "networkx", "jinja2"),
        *("markupsafe", "triton", "setuptools", "flatbuffers", "coloredlogs", "humanfriendly"),
    )
)
# Imported by the code but not needed by the server, the export or the GPU checks, each with why.
NOT_CARRIED = {
    "moments-client": "the repository's own client, on PYTHONPATH",
    "aperturedb": "only `--store aperturedb://` (no ApertureDB server there)",
    "matplotlib": "the eval plot (`moments eval --plot`), not the checks",
    "pytest": "the test suite",
    "hypothesis": "the test suite",
    "grpcio-tools": "stub generation; the stubs are carried",
    "pyinstrument": "an optional profiler",
}
# From pyproject's dev extra, for the checks: psutil (RSS, CPU time) and py-spy (profiles on the card).
DEV_CARRIED = ("psutil", "py-spy")
# Extras that are not carried: onnxruntime-gpu's cuda/cudnn (the card's torch brings the same libraries).
DROPPED_EXTRAS = {"onnxruntime-gpu": ("cuda", "cudnn")}
# onnxruntime-gpu is not installed here (one build per environment): the CPU build's metadata stands in.
METADATA_OF = {"onnxruntime-gpu": "onnxruntime"}
CARD_MARKERS = {
    "python_version": CARD_PYTHON,
    "python_full_version": f"{CARD_PYTHON}.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "extra": "",
}
# The generated code the server and the check import (git-ignored): carried with the check's call.
STUBS = ("clients/python/moments/v1", "server/moments_server/store/embedded/aperturedb")


def roots() -> list[Requirement]:
    """The server's dependencies with the GPU build of onnxruntime, the export extra and the checks' dev tools."""
    proj = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras: dict[str, list[str]] = proj["optional-dependencies"]
    dev = [r for r in extras["dev"] if canonicalize_name(Requirement(r).name) in DEV_CARRIED]
    reqs: list[str] = [*proj["dependencies"], *extras["gpu"], *extras["export"], *dev]
    return [Requirement(r) for r in reqs]


def _pin(req: Requirement) -> str | None:
    pins = [s.version for s in req.specifier if s.operator == "=="]
    return pins[0] if pins else None


def _on_card(name: str, version: str | None) -> bool:
    if name not in ON_THE_CARD:
        return False
    card = CARD_VERSIONS.get(name)
    return card is None or version is None or version.split(".")[:2] == card.split(".")[:2]


def _requires(name: str, extras: set[str]) -> list[Requirement]:
    """What `name` with `extras` requires on the card (markers evaluated for it)."""
    envs = [{**CARD_MARKERS, "extra": e} for e in ("", *sorted(extras))]
    reqs = (Requirement(r) for r in metadata.requires(METADATA_OF.get(name, name)) or [])
    return [r for r in reqs if r.marker is None or any(r.marker.evaluate(env) for env in envs)]


def carried() -> dict[str, str]:
    """name -> version of every distribution to carry: the roots not on the card at a matching version, and
    everything they require (markers evaluated for the card) that the card lacks, at the version installed
    here. Raises when a requirement is neither here nor on the card: then nobody has tested that version."""
    out: dict[str, str] = {}
    todo = [(r, True) for r in roots()]
    while todo:
        req, is_root = todo.pop()
        name = canonicalize_name(req.name)
        if name in out or name in NOT_CARRIED or (is_root and _on_card(name, _pin(req))):
            continue
        if not is_root and name in ON_THE_CARD:
            continue
        version = _pin(req) if is_root else None
        if version is None:
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                raise LookupError(f"{name} (required for the card) is not installed here: `make install`") from None
        out[name] = version
        extras = set(req.extras) - set(DROPPED_EXTRAS.get(name, ()))
        todo += [(sub, False) for sub in _requires(name, extras)]
    return dict(sorted(out.items()))


def download(wheels: dict[str, str], dest: Path) -> list[Path]:
    """The cp312 manylinux wheels (or pure-Python ones) of `wheels`, without dependencies (carried() has them)."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    cmd += ["--python-version", CARD_PYTHON, "--implementation", "cp", "--platform", "any"]
    for p in PLATFORMS:
        cmd += ["--platform", p]
    subprocess.run([*cmd, *(f"{n}=={v}" for n, v in wheels.items())], check=True)
    return sorted(dest.glob("*.whl"))


def pack(wheels: list[Path], out: Path, part_bytes: int = PART_BYTES) -> list[Path]:
    """site/ (onnxruntime-gpu unpacked, without its TensorRT provider) and whl/ (the rest) in one tar.xz, split
    into `out`/part.NN of at most part_bytes; `out`/sha256 is the whole archive's. Returns the parts."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part.*"):
        old.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        archive = Path(tmp) / "all.tar.xz"
        with tarfile.open(archive, "w:xz", preset=6) as tar:
            for whl in wheels:
                if whl.name.startswith("onnxruntime_gpu-"):
                    site = Path(tmp) / "site"
                    with zipfile.ZipFile(whl) as z:
                        z.extractall(site)
                    (site / "onnxruntime/capi/libonnxruntime_providers_tensorrt.so").unlink(missing_ok=True)
                    tar.add(site, "site")
                else:
                    tar.add(whl, f"whl/{whl.name}")
        digest = hashlib.sha256()
        parts: list[Path] = []
        with archive.open("rb") as f:
            while chunk := f.read(part_bytes):
                digest.update(chunk)
                parts.append(out / f"part.{len(parts):02d}")
                parts[-1].write_bytes(chunk)
    (out / "sha256").write_text(digest.hexdigest() + "\n")
    shutil.copy(REPO / "tests/bench/gpu_unpack.sh", out / "unpack.sh")
    return parts


def steps(parts: list[Path], out: Path) -> str:
    """The device calls, in order: one per part, then the two phases of tests/bench/card_check.sh."""
    rel = out.relative_to(REPO)
    lines = [f"{len(parts)} parts. On the device, one call per part, back to back (the machine stays warm 30 s):"]
    for p in parts:
        copy = f"mkdir -p /tmp/gpu-parts && cp {rel}/{p.name} /tmp/gpu-parts/"
        lines.append(f'  run  carry=["{rel}/{p.name}"]  command: {copy}')
    carry = ", ".join(f'"{c}"' for c in (f"{rel}/unpack.sh", f"{rel}/sha256", *STUBS))
    lines.append("then, on the same warm machine, each with timeout_s 600 (each phase stops itself sooner):")
    for phase in ("serve", "core"):
        lines.append(f"  run  carry=[{carry}]  command: GPU_CARRY={rel} bash tests/bench/card_check.sh {phase}")
    lines.append("then copy what comes back into tests/bench/results/ (named for the card) and give the machine back.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.bench.gpu_carry", description=__doc__.split("\n\n")[0])
    p.add_argument("--list", action="store_true", help="print what would be carried and stop")
    p.add_argument("--out", type=Path, default=REPO / ".gpu-carry")
    args = p.parse_args(argv)
    wheels = carried()
    if args.list:
        print("\n".join(f"{n}=={v}" for n, v in wheels.items()))
        return 0
    missing = [s for s in STUBS if not any((REPO / s).glob("*_pb2.py"))]
    if missing:
        raise SystemExit(f"generated stubs missing in {missing}: `make protos` first")
    out = args.out.resolve()
    if not out.is_relative_to(REPO):
        raise SystemExit(f"--out {out}: a device call carries paths inside the repository only")
    with tempfile.TemporaryDirectory() as tmp:
        parts = pack(download(wheels, Path(tmp) / "whl"), out)
    (out / "steps.txt").write_text(steps(parts, out))
    print((out / "steps.txt").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
