"""What a lent card is given (tests/bench/gpu_carry.py): every import of the server, the export and the GPU
checks is carried or on the card, the generated stubs travel with the check, and the packed parts unpack into
an importable site. A card is lent for 15 minutes: an ImportError there costs the session its check."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from tests.bench import gpu_carry
from tests.conftest import REPO

# What the server, the export and the one-command checks run (server_check and cuda_paths, with the bench
# modules they import).
CODE = [
    REPO / "server/moments_server",
    REPO / "export/moments_export",
    REPO / "clients/python/moments_client",
    REPO / "tests/live.py",
    *(REPO / "tests/bench" / f"{m}.py" for m in ("server_check", "cuda_paths", "gpu", "common", "data", "load")),
    *(REPO / "tests/bench" / f"{m}.py" for m in ("multiload", "embedder_alone", "ingest_decode", "model")),
]
FIRST_PARTY = {"moments_server", "moments_export", "moments_client", "moments_shapes", "moments", "tests", "protos"}


def _runtime_imports(tree: ast.AST) -> list[str]:
    """Module names imported absolutely, outside `if TYPE_CHECKING:` blocks."""
    out: list[str] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo += node.orelse
            continue
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append(node.module)
        todo += ast.iter_child_nodes(node)
    return out


def third_party_imports() -> dict[str, set[str]]:
    """Top-level module -> the files that import it at run time (outside the standard library)."""
    found: dict[str, set[str]] = {}
    files = [f for c in CODE for f in (sorted(c.rglob("*.py")) if c.is_dir() else [c])]
    for f in files:
        if "_pb2" in f.name:
            continue
        for n in _runtime_imports(ast.parse(f.read_text(), str(f))):
            top = n.split(".")[0]
            if top not in sys.stdlib_module_names and top not in FIRST_PARTY:
                found.setdefault(top, set()).add(str(f.relative_to(REPO)))
    return found


def test_every_import_is_carried_or_on_the_card() -> None:
    carried = set(gpu_carry.carried())
    dists = metadata.packages_distributions()
    # torch's CUDA libraries (`import nvidia` finds their folder) come with the card's torch
    modules_on_card = {"nvidia"}
    unmet = {}
    for module, files in third_party_imports().items():
        if module in modules_on_card:
            continue
        names: set[str] = {canonicalize_name(d) for d in dists.get(module, [])} or {f"<none here for {module}>"}
        # onnxruntime is imported as onnxruntime from either build: the card gets the GPU one
        names = {"onnxruntime-gpu" if n == "onnxruntime" else n for n in names}
        if not any(n in carried or n in gpu_carry.ON_THE_CARD or n in gpu_carry.NOT_CARRIED for n in names):
            unmet[module] = (sorted(names), sorted(files)[:3])
    assert not unmet, f"imported, but neither carried nor on the card: {unmet}"


def test_the_project_pins_are_what_is_carried() -> None:
    wheels = gpu_carry.carried()
    for req in gpu_carry.roots():
        name: str = canonicalize_name(req.name)
        pin = [s.version for s in req.specifier if s.operator == "=="]
        if name in wheels and pin:
            assert wheels[name] == pin[0], (name, wheels[name], pin)
    # what the server needs that the card's image lacks or has at another version (../shared/gpu/README.md)
    for name in ("onnxruntime-gpu", "av", "faiss-cpu", "uvloop", "scenedetect-headless", "opencv-python-headless"):
        assert name in wheels, name
    assert wheels["protobuf"].startswith("6.") and wheels["grpcio"] == "1.81.2"
    # the card's own torch and ONNX Runtime CPU build are never carried (the CUDA build is the point)
    assert not {"torch", "torchvision", "onnxruntime"} & set(wheels)
    assert not any(n.startswith("nvidia-") for n in wheels)
    # a carried package's requirements are carried too (pydantic-core pairs with pydantic: the versions here)
    assert wheels["pydantic-core"] == metadata.version("pydantic-core")
    assert {"cffi", "pycparser", "click", "platformdirs", "tqdm", "wcwidth"} <= set(wheels)


def test_generated_code_travels_with_the_check() -> None:
    ignored = subprocess.run(
        ["git", "ls-files", "--others", "--ignored", "--exclude-standard", "server", "clients/python"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    generated = [p for p in ignored if p.endswith("_pb2.py") or p.endswith("_pb2_grpc.py")]
    assert generated, "no generated stubs: `make protos`"
    assert all(any(p.startswith(s + "/") for s in gpu_carry.STUBS) for p in generated), generated
    steps = gpu_carry.steps([REPO / ".gpu-carry/part.00"], REPO / ".gpu-carry")
    carry = steps.split("carry=[")[-1].split("]")[0]
    assert all(f'"{s}"' in carry for s in gpu_carry.STUBS) and len(carry.split(",")) <= 8  # run's carry limit


def _wheel(folder: Path, name: str, module: str, body: str) -> Path:
    """A minimal real wheel (PEP 427) of one module."""
    dist = f"{name}-1.0"
    whl = folder / f"{name}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{module}.py", body)
        z.writestr(f"{dist}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        wheel = "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        z.writestr(f"{dist}.dist-info/WHEEL", wheel)
        z.writestr(f"{dist}.dist-info/RECORD", "")
    return whl


def test_parts_unpack_into_an_importable_site(tmp_path: Path) -> None:
    wheels = tmp_path / "whl"
    wheels.mkdir()
    # incompressible bodies, so that the archive spans several parts
    a = _wheel(wheels, "carried_a", "carried_a", f"VALUE = 41\nPAD = {os.urandom(40_000).hex()!r}\n")
    ort = _wheel(wheels, "onnxruntime_gpu", "ort_stand_in", "VALUE = 1\n")
    out = tmp_path / "carry"
    parts = gpu_carry.pack([a, ort], out, part_bytes=30_000)
    assert len(parts) >= 2 and all(p.stat().st_size <= 30_000 for p in parts)
    copied = tmp_path / "gpu-parts"
    copied.mkdir()
    for p in parts:  # what the per-part device calls do
        (copied / p.name).write_bytes(p.read_bytes())
    site = tmp_path / "site"
    env = {**os.environ, "GPU_PARTS": str(copied), "GPU_SITE": str(site), "GPU_PROBE": "0", "PYTHONPATH": ""}
    script = f"source {out}/unpack.sh && python3 -c 'import carried_a, ort_stand_in; print(carried_a.VALUE + 1)'"
    run = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.split()[-1] == "42", run.stderr[-2000:]
    # onnxruntime-gpu is unpacked into the site as it is (not pip-installed), the rest installed from wheels
    assert (site / "ort_stand_in.py").exists() and (site / "carried_a-1.0.dist-info").is_dir()

    (copied / parts[-1].name).write_bytes(b"truncated")  # a part that did not arrive whole is refused
    site2 = tmp_path / "site2"
    env2 = {**env, "GPU_SITE": str(site2)}
    run = subprocess.run(
        ["bash", "-c", f"source {out}/unpack.sh"], env=env2, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "incomplete or corrupt" in run.stderr and not (site2 / ".unpacked").exists()


def test_the_card_check_commands_take_their_flags(tmp_path: Path) -> None:
    """card_check.sh's steps, printed by its dry run: each module's --help offers every flag the step passes."""
    env = {**os.environ, "CARD_CHECK_DRY": "1", "OUT": str(tmp_path), "CARD_CHECK_WORK": str(tmp_path / "w")}
    printed = []
    for phase in ("serve", "core"):
        run = subprocess.run(
            ["bash", "tests/bench/card_check.sh", phase], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert run.returncode == 0, run.stderr
        printed += run.stdout.splitlines()
    names = [line.split(":")[0] for line in printed]
    assert names == ["export-fp16", "server-check", "vs-torch", "cuda-paths"], printed
    paths = (REPO, REPO / "server", REPO / "export", REPO / "clients/python")
    py = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}
    for line in printed:
        argv = line.split("python3 -m ", 1)[1].split()
        module, flags = argv[0], [a for a in argv[1:] if a.startswith("--")]
        helped = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=REPO, env=py, capture_output=True, text=True
        )
        assert helped.returncode == 0, (module, helped.stderr[-2000:])
        offered = set(re.findall(r"--[\w-]+", helped.stdout))
        assert set(flags) <= offered, (module, set(flags) - offered)
