"""Imports go one way: layers <- heads <- models.{config, base, zorro} <- fusion, backbones <-
models.registry. Checked on the source (AST), so a cycle cannot hide behind a function-level import."""

from __future__ import annotations

import ast
from pathlib import Path

import avfusion

SRC = Path(avfusion.__file__).parent
PACKAGES = ("layers", "heads", "models", "fusion", "backbones")
# What each package may import from avfusion (besides itself); models/ is split by module below.
ALLOWED = {
    "layers": {"errors", "utils"},  # utils: leaf helpers (files, seeding) that import only errors
    "heads": {"errors", "layers"},
    "fusion": {"errors", "layers", "heads", "models"},
    "backbones": {"errors", "layers", "heads", "models"},
}
# The one deliberate function-level import: create_model(pretrained_backbone=...) calls the ViT
# converter, and convert/ builds on models/ (scenic_mbt needs build_model).
LAZY_OK = {("models/registry.py", "avfusion.convert.vit")}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((SRC / pkg).glob("*.py")):
            name = f"avfusion.{pkg}" if path.name == "__init__.py" else f"avfusion.{pkg}.{path.stem}"
            out[name] = path
    return out


def _imports(path: Path) -> tuple[list[str], list[str]]:
    """(module-level avfusion imports, function-level ones) as dotted module names."""
    tree = ast.parse(path.read_text())
    top, lazy = [], []

    def names(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom) and node.module:
            # "from avfusion.models import base" imports the submodule when there is one.
            return [f"{node.module}.{a.name}" if (SRC.parent / f"{node.module}.{a.name}".replace(".", "/")).with_suffix(
                ".py").is_file() else node.module for a in node.names]
        return []

    for node in tree.body:
        top += [n for n in names(node) if n.startswith("avfusion")]
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                lazy += [n for n in names(inner) if n.startswith("avfusion")]
    return top, lazy


def test_each_package_imports_only_below_it() -> None:
    for name, path in _modules().items():
        pkg = name.split(".")[1]
        top, _ = _imports(path)
        for target in top:
            tpkg = target.split(".")[1]
            if tpkg == pkg or pkg == "models":
                continue
            assert tpkg in ALLOWED[pkg], f"{name} imports {target}: {pkg}/ may import only {sorted(ALLOWED[pkg])}"


def test_no_function_level_imports() -> None:
    for name, path in _modules().items():
        _, lazy = _imports(path)
        rel = str(path.relative_to(SRC))
        extra = [t for t in lazy if (rel, t) not in LAZY_OK]
        assert not extra, f"{rel} imports {extra} inside a function (an import cycle dodged?)"


def test_no_import_cycles() -> None:
    modules = _modules()
    graph = {name: [t for t in _imports(path)[0] if t in modules] for name, path in modules.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*stack, node, nxt])
            if nxt not in state:
                visit(nxt, [*stack, node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
    # The lower layers of models/ never reach the registry or the families.
    for low in ("avfusion.models.config", "avfusion.models.base", "avfusion.models.zorro"):
        assert not {t for t in graph[low] if t.startswith(("avfusion.fusion", "avfusion.backbones",
                                                            "avfusion.models.registry"))}, low
