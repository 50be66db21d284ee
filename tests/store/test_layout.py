"""The embedded store's module layout: no import cycle among its modules and no module over 400 lines.

Imports are read from the source (ast), wherever they stand: module level, inside functions, and under
`if TYPE_CHECKING:` alike, so a cycle cannot hide behind a deferred or type-only import. Generated code
(`*_pb2.py`) is neither counted nor parsed for cycles.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "moments_server.store.embedded"
ROOT = Path(__file__).resolve().parents[2] / "server" / "moments_server" / "store" / "embedded"
MAX_LINES = 400


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
    """The package module `name` (relative dotted) names, or the nearest package above it that exists."""
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in known else None


def imports_of(mod: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules that `mod` imports (any import statement anywhere in the file)."""
    is_pkg = path.name == "__init__.py"
    here = mod.split(".") if mod else []
    base = here if is_pkg else here[:-1]  # the package a relative import starts from
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name[len(PACKAGE) + 1 :] for a in node.names if a.name.startswith(PACKAGE + ".")]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                if node.level - 1 > len(base):
                    continue  # above the package: not ours
                prefix = [*anchor, *(node.module.split(".") if node.module else [])]
            elif node.module == PACKAGE or (node.module or "").startswith(PACKAGE + "."):
                prefix = node.module[len(PACKAGE) + 1 :].split(".") if node.module != PACKAGE else []
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


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = modules(root)
    return {m: imports_of(m, p, known) for m, p in known.items()}


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


def test_no_import_cycle() -> None:
    graph = import_graph()
    assert len(graph) > 10, f"found only {sorted(graph)} under {ROOT}"
    found = cycles(graph)
    assert not found, "import cycles among store/embedded modules: " + "; ".join(
        " <-> ".join(c) + " (" + ", ".join(f"{m} -> {sorted(graph[m] & set(c))}" for m in c) + ")" for c in found
    )


def test_no_module_over_the_line_limit() -> None:
    long = {m or "__init__": n for m, p in modules().items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by what they hold): {long}"


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
