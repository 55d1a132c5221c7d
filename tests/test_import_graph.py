"""The package's import graph: no cycle, and core never leans on jupyter/.

Every ``import`` in ``labcache/`` is read with ``ast``, function-local and
``TYPE_CHECKING`` imports included, so a cycle hidden inside a function is
still a cycle.  Modules outside ``labcache/jupyter/`` may reach into it at
most through one hook (the status line of a call in a kernel).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "labcache"
#: The one door from core into jupyter/: drawing a call's status in a cell.
CORE_TO_JUPYTER_HOOKS = 1


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The labcache modules ``path`` imports, anywhere in the file."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(path) for path in files}
    graph = {_module_name(path): _imports(path, modules) for path in files}
    # A package's __init__ being imported by its own submodules is Python's
    # doing, not a design arrow: count only imports of a package from outside.
    return {source: {target for target in targets
                     if not (source.startswith(target + ".") and target in _packages(modules))}
            for source, targets in graph.items()}


def _packages(modules: set[str]) -> set[str]:
    return {name for name in modules if any(other.startswith(name + ".") for other in modules)}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the list of modules around it, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_local_imports() -> None:
    graph = _graph()
    assert "labcache.keys" in graph["labcache.cached"]  # a top-level import
    assert "labcache.storage" in graph["labcache.jupyter.widget"]  # one inside a function


def test_no_import_cycle_even_inside_functions() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_a_planted_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _cycle(graph) == ["a", "b", "c", "a"]


def test_core_reaches_jupyter_through_one_hook_at_most() -> None:
    # The package's __init__ is the public API, not core: it names the widget
    # and %load_ext's entry point (lazily) because IPython and users look there.
    arrows = sorted((source, target) for source, targets in _graph().items()
                    for target in targets
                    if target.startswith("labcache.jupyter")
                    and not source.startswith("labcache.jupyter") and source != "labcache")
    assert len(arrows) <= CORE_TO_JUPYTER_HOOKS, f"core imports of jupyter/: {arrows}"


def test_storages_know_nothing_of_cached() -> None:
    graph = _graph()
    upward = {"labcache.cached", "labcache.protocol", "labcache.jupyter", "labcache.cli"}
    for source, targets in graph.items():
        if source.startswith("labcache.storage") or source in {"labcache.base", "labcache.locks"}:
            assert not targets & upward, f"{source} imports {sorted(targets & upward)}"
