"""The code's layout: no import cycle among the modules of each package, no module over 400 lines, and
protobuf only at the edge (the server's transport and composition root).

Imports are read from the source (ast), wherever they stand: module level, inside functions, and under
`if TYPE_CHECKING:` alike, so a cycle cannot hide behind a deferred or type-only import. Generated code
(`*_pb2.py`) is neither counted nor parsed for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import REPO

# package -> its folder
PACKAGES = {
    "moments_server": REPO / "server" / "moments_server",
    "moments_export": REPO / "export" / "moments_export",
    "moments_client": REPO / "clients" / "python" / "moments_client",
    "moments_shapes": REPO / "clients" / "python" / "moments_shapes",
}
PACKAGE = "moments_server.store.embedded"  # the checker's own tests use this one
ROOT = PACKAGES["moments_server"] / "store" / "embedded"
MAX_LINES = 400
# Where the server may import the API's protobuf: the transport, and app.py, which puts the servicer, health
# and reflection on the gRPC server.
PROTOBUF_EDGE = ("transport", "app")


def _generated(path: Path) -> bool:
    return path.stem.endswith("_pb2") or path.stem.endswith("_pb2_grpc")


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name relative to the package ('' for __init__) -> file, generated code left out."""
    out: dict[str, Path] = {}
    for p in sorted(root.rglob("*.py")):
        if _generated(p):
            continue
        rel = p.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The package module `name` (relative dotted) names, or the nearest package above it that exists
    (None for generated code, which imports nothing of ours)."""
    if _generated(Path(name.rsplit(".", 1)[-1])):
        return None
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def imports_of(mod: str, path: Path, known: dict[str, Path], package: str = PACKAGE) -> set[str]:
    """The package modules that `mod` imports (any import statement anywhere in the file)."""
    is_pkg = path.name == "__init__.py"
    here = mod.split(".") if mod else []
    base = here if is_pkg else here[:-1]  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name[len(package) + 1 :] for a in node.names if a.name.startswith(package + ".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                if node.level - 1 > len(base):
                    continue  # above the package: not ours
                prefix = [*anchor, *(node.module.split(".") if node.module else [])]
            elif node.module == package or (node.module or "").startswith(package + "."):
                prefix = node.module[len(package) + 1 :].split(".") if node.module != package else []
            else:
                continue
            # `from .pkg import name`: name may be a submodule; otherwise the import is of .pkg itself
            for a in node.names:
                sub = ".".join([*prefix, a.name])
                targets.append(sub if sub in known else ".".join(prefix))
        for t in targets:
            r = _resolve(t, known)
            if r is not None and r != mod:
                found.add(r)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports_of(m, p, known, package) for m, p in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_import_cycle(package: str) -> None:
    graph = import_graph(PACKAGES[package], package)
    assert graph, f"found no module under {PACKAGES[package]}"
    found = cycles(graph)
    assert not found, f"import cycles among {package} modules: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) + ")" for c in found
    )


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_no_module_over_the_line_limit(package: str) -> None:
    found = modules(PACKAGES[package]).items()
    long = {m or "__init__": n for m, p in found if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"{package} modules over {MAX_LINES} lines (split them by what they hold): {long}"


def test_protobuf_stays_at_the_edge() -> None:
    """The core (service/, catalog/, inference/, video/, store/...) speaks its own types: only the transport
    converts the API's protobuf."""
    inside = []
    for mod, path in modules(PACKAGES["moments_server"]).items():
        if mod.split(".")[0] in PROTOBUF_EDGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            inside += [f"{mod}: {n}" for n in names if n == "moments" or n.startswith("moments.")]
    assert not inside, f"protobuf of the API imported outside the transport: {inside}"


# -- the checker itself ----------------------------------------------------------------------------------


@pytest.fixture
def pkg(tmp_path: Path) -> Path:
    root = tmp_path / "embedded"
    root.mkdir()
    return root


def test_checker_finds_cycles_through_deferred_and_type_only_imports(pkg: Path) -> None:
    (pkg / "__init__.py").write_text("from .a import A\n")
    (pkg / "a.py").write_text("from . import b\nA = 1\n")
    (pkg / "b.py").write_text("def f():\n    from .c import C\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nC = 1\nimport os\n"
    )
    (pkg / "d.py").write_text("from .a import A\nfrom moments_server.store.embedded.c import C\n")
    (pkg / "x_pb2.py").write_text("from . import a\n")  # generated: ignored
    graph = import_graph(pkg)
    assert graph == {"": {"a"}, "a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a", "c"}}
    assert cycles(graph) == [["a", "b", "c"]]
    (pkg / "c.py").write_text("C = 1\n")
    assert cycles(import_graph(pkg)) == []
