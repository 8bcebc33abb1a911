"""The project's import graph: no module imports a higher layer (sim <- envs <-
world_models <- agents <- run.py) and no modules import each other in a circle.

Every import counts, lazy ones inside functions included: a circle that only a
function-level import keeps from failing is still a circle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"sim": 0, "envs": 1, "world_models": 2, "agents": 3, "run": 4}


def _modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the project (tests excluded)."""
    found = {"run": ROOT / "run.py"}
    for package in ("sim", "envs", "world_models", "agents"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project's modules that `name` imports (the longest known prefix of each)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            targets += [
                f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names
            ]
    imported = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            imported.add(target)
    return imported


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _layer(module: str) -> int:
    return LAYERS[module.split(".")[0]]


def _upward(graph: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import of a higher layer."""
    return [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        for target in sorted(targets)
        if _layer(target) > _layer(module)
    ]


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return circles


def test_the_graph_sees_every_package_and_its_imports():
    graph = _graph()
    assert {"sim.data.dataset", "envs.registry", "world_models.train", "agents.jobs.loop"} <= set(
        graph
    )
    assert "sim.data.atomic" in graph["sim.data.dataset"]  # a plain import
    assert "agents.jobs.ray_collect" in graph["run"]


def test_no_module_imports_a_higher_layer():
    upward = _upward(_graph())
    assert not upward, "imports up the layers: " + "; ".join(upward)


def test_no_import_circles():
    circles = _circles(_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_checks_catch_a_circle_and_an_upward_import():
    graph = {"sim.a": {"sim.b"}, "sim.b": {"sim.a"}, "envs.c": {"agents.d"}, "agents.d": set()}
    assert _circles(graph) == [["sim.a", "sim.b"]]
    assert _upward(graph) == ["envs.c -> agents.d"]
