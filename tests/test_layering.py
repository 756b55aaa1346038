"""Imports go one way, across every package of avfusion, function-level imports counted.

The layer order (docs/DESIGN.md, "Layers"), bottom to top; a package may import itself and any
package of a lower rank, never one of its own rank or above:

    errors, tasks < utils < layers < heads < core < data, fusion, backbones < convert < models
    < bench, infer, zoo < eval < train < demo < cli

Checked on the source (AST), so a cycle cannot hide behind an import inside a function.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import avfusion

SRC = Path(avfusion.__file__).parent
RANK: dict[str, int] = {
    "errors": 0, "tasks": 0, "utils": 1, "layers": 2, "heads": 3, "core": 4,
    "data": 5, "fusion": 5, "backbones": 5, "convert": 6, "models": 7, "bench": 8, "infer": 8, "zoo": 8,
    "eval": 9, "train": 10, "demo": 11, "cli": 12,
    "__init__": 13, "__main__": 13,  # avfusion/__init__.py (the public surface) and `python -m avfusion`
}
# The packages a model is made of import nothing inside functions (no cycle dodged there).
NO_LAZY = ("layers", "heads", "core", "fusion", "backbones", "models")


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _package(module: str) -> str:
    """The first-level package (or top-level module) a module belongs to."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _resolve(name: str) -> str:
    """The module an import names ("avfusion.models.registry.build_model" -> its module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(every avfusion module imported, those imported inside a function)."""
    tree = ast.parse(path.read_text())

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            return [f"{node.module}.{a.name}" for a in node.names]
        return []

    every = {_resolve(n) for node in ast.walk(tree) for n in names(node) if n.startswith("avfusion")}
    lazy = {_resolve(n) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
            for node in ast.walk(fn) for n in names(node) if n.startswith("avfusion")}
    return every - {""}, lazy - {""}


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_every_package_has_a_rank() -> None:
    assert {_package(m) for m in MODULES} == set(RANK)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_below(module: str) -> None:
    pkg = _package(module)
    for target in GRAPH[module][0]:
        tpkg = _package(target)
        if tpkg == pkg or target == "avfusion":
            continue
        assert RANK[tpkg] < RANK[pkg], (f"{module} imports {target}: {pkg}/ (rank {RANK[pkg]}) may import only "
                                        f"lower layers, {tpkg}/ is rank {RANK[tpkg]}")


def test_no_function_level_imports_in_model_packages() -> None:
    for module, (_, lazy) in GRAPH.items():
        if _package(module) in NO_LAZY:
            assert not lazy, f"{module} imports {sorted(lazy)} inside a function (an import cycle dodged?)"


def test_no_module_import_cycles() -> None:
    """No cycle between modules either, inside a package included (a package importing its own
    __init__ from a submodule counts as an edge too)."""
    graph = {m: sorted(t for t in GRAPH[m][0] if t != m and t != "avfusion") for m in MODULES}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            # a submodule importing names from its own package's __init__ is the usual re-export
            # pattern only when the __init__ does not import it back: the cycle check catches that.
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])


def test_the_check_sees_a_function_level_cycle(tmp_path: Path) -> None:
    """The checker itself: an import inside a function that closes a loop is found."""
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from avfusion.train.loop import fit\n")
    every, lazy = _imports(a)
    assert every == lazy == {"avfusion.train.loop"}


def test_docs_name_every_package() -> None:
    """README's layout and docs/DESIGN.md's layer table list exactly the packages in the tree."""
    repo = Path(__file__).resolve().parents[1]
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    readme = (repo / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    listed = {line.split()[0].rstrip("/") for line in layout.splitlines()
              if line.startswith("  ") and line.split()[0].endswith("/")}
    assert listed == packages
    design = (repo / "docs" / "DESIGN.md").read_text()
    table = design[design.index("## 7. Layers"):]
    ranked = {name.strip(" `/") for row in table.splitlines() if row.startswith("| ") and row[2].isdigit()
              for name in row.split("|")[2].split(",")}
    assert ranked == {p for p in RANK if not p.startswith("__")}
    assert packages <= ranked
