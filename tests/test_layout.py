"""The package's layers, read from every module's imports (ast): imports point down only,
there is no circle, and what runs an ONNX export imports no torch.

    base (sbert/*.py) <- data <- models <- training | inference <- serve <- cli

`training` and `inference` are side by side and never import each other: a serving machine has
no trainer, and a trainer needs no ONNX Runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sbert"
LAYERS = {"data": 1, "models": 2, "training": 3, "inference": 3, "serve": 4, "cli": 5}
# What `sbert encode/similarity/predict/index/search/evaluate-retrieval` and `sbert.load` run
# on an export: none of it may import torch when it is imported (tests/inference/
# test_export_use.py runs those commands with torch blocked).
TORCH_FREE = [
    "sbert.inference.load",
    "sbert.inference.predict",
    "sbert.inference.index",
    "sbert.inference.retrieval",
    "sbert.serve.app",
    "sbert.serve.server",
    "sbert.cli",
    *(f"sbert.cli.{p.stem}" for p in (PACKAGE / "cli").glob("*.py") if p.stem != "__init__"),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """The modules `name` imports (sbert's by their module, others by their top package);
    `top_level_only`: only the imports that run when the module is imported."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{name}: relative import; write sbert.x.y"
            targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            found.add(owner(target))
    return found - {name, None}


def owner(target: str) -> str | None:
    """The module of an imported name: sbert.models.bert.Bert -> sbert.models.bert."""
    if not target.startswith("sbert"):
        return target.split(".")[0]
    while target and target not in MODULES:
        target = target.rpartition(".")[0]
    return target or None


def layer(name: str) -> tuple[int, str]:
    """(rank, subpackage) of a module of ours; the base is rank 0."""
    if name == "sbert.__main__":  # `python -m sbert`: the command line
        return LAYERS["cli"], "cli"
    parts = name.split(".")
    if len(parts) > 1 and parts[1] in LAYERS:  # a module of a subpackage, or its __init__
        return LAYERS[parts[1]], parts[1]
    return 0, "base"


def test_every_module_is_in_a_layer():
    folders = {p.parent.name for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE}
    unknown = sorted(folders - LAYERS.keys())
    assert not unknown, f"modules in no layer (add their folder to LAYERS): {unknown}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_point_down(name):
    if name == "sbert":  # the public API: lazy re-exports by name, imported on first use
        return
    rank, package = layer(name)
    for target in imports(name):
        if not target.startswith("sbert"):
            continue
        their_rank, their_package = layer(target)
        assert their_rank < rank or their_package == package, (
            f"{name} ({package}) imports {target} ({their_package}): an import that points up "
            f"or sideways"
        )


def test_no_circles():
    graph = {name: {t for t in imports(name) if t in MODULES} for name in MODULES}
    done, path = set(), []

    def visit(name: str) -> None:
        if name in path:
            circle = path[path.index(name) :] + [name]
            raise AssertionError("import circle: " + " -> ".join(circle))
        if name in done:
            return
        path.append(name)
        for target in sorted(graph[name]):
            visit(target)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


@pytest.mark.parametrize("name", TORCH_FREE)
def test_the_export_path_imports_no_torch(name):
    seen, todo = set(), [name]
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        for target in imports(module, top_level_only=True):
            assert target != "torch", f"{name} imports torch through {module}"
            if target in MODULES:
                todo.append(target)
                todo.extend(parent for parent in parents(target) if parent in MODULES)


def parents(name: str) -> list[str]:
    """Importing sbert.a.b imports sbert and sbert.a first."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]
