"""The shape of the code: no import cycles, the core never imports a default plugin.

Own check rather than import-linter: grimp finds a package's modules in its folder, and
``flask_execute.plugins`` lives in ``plugins/`` (``flask_execute/plugins`` is a symlink to
it, which ``rglob`` does not follow) where it cannot.
Every import counts, inside functions too (an import moved into a function to dodge a
cycle is still a cycle); only ``if TYPE_CHECKING:`` blocks, never run, are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = {"flask_execute": ROOT / "flask_execute", "flask_execute.plugins": ROOT / "plugins"}


def _modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):  # not through the flask_execute/plugins symlink
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(module: str, path: Path) -> set[str]:
    """Our modules that ``module`` imports when it runs (at any depth of its code)."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            # `from package import module` imports the module; else the names' module
            modules = {f"{base}.{alias.name}" for alias in node.names} & MODULES.keys()
            targets.update(modules or {base})
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {t for t in targets if t in MODULES and t != module}


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _cycles() -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(GRAPH[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    return found


def _is_plugin(module: str) -> bool:
    return module == "flask_execute.plugins" or module.startswith("flask_execute.plugins.")


def test_the_graph_is_found():
    assert "flask_execute.extension" in GRAPH and "flask_execute.plugins.services" in GRAPH
    assert "flask_execute.runtime" in GRAPH["flask_execute.extension"]
    # a relative import inside a plugin package resolves
    assert "flask_execute.plugins.services.supervisor" in GRAPH["flask_execute.plugins.services"]


def test_no_import_cycles():
    assert _cycles() == []


def test_the_core_never_imports_a_default_plugin():
    wrong = {
        module: sorted(t for t in targets if _is_plugin(t))
        for module, targets in GRAPH.items()
        if not _is_plugin(module) and any(_is_plugin(t) for t in targets)
    }
    assert wrong == {}


def test_plugins_depend_on_the_core_not_on_each_other():
    def family(module: str) -> str:
        return ".".join(module.split(".")[:3])  # flask_execute.plugins.<plugin>

    crossing = {
        module: sorted(t for t in targets if _is_plugin(t) and family(t) != family(module))
        for module, targets in GRAPH.items()
        if _is_plugin(module)
    }
    assert {m: t for m, t in crossing.items() if t} == {}


def test_plugins_use_the_record_not_the_extension_or_the_cli():
    top = {"flask_execute.extension", "flask_execute.cli", "flask_execute"}
    wrong = {m: sorted(GRAPH[m] & top) for m in GRAPH if _is_plugin(m) and GRAPH[m] & top}
    assert wrong == {}


def test_no_module_is_too_large():
    sizes = {m: len(p.read_text().splitlines()) for m, p in MODULES.items()}
    assert {m: n for m, n in sizes.items() if n > 400} == {}
