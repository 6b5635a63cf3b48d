"""Measure the import structure: loops, imports inside functions, floors, sizes.

Run ``python -m bench.imports`` from the repository root. It reads the source
with :mod:`ast` (nothing is imported) and prints:

- module-level import loops: strongly connected components of the graph whose
  edges are the imports at module level (not inside a function, not under
  ``if TYPE_CHECKING:``);
- imports of the project made inside functions: how many, and which of them
  would close a loop if they moved to module level;
- upward imports: a module importing one on a higher floor (:data:`FLOORS`);
- the largest modules by lines.

An edge goes to the module that is imported: ``from a import b`` points at
``a.b`` when ``a/b.py`` (or ``a/b/__init__.py``) exists, else at ``a``.
Importing ``a.b`` also runs ``a/__init__.py``: that is an edge too, unless
``a`` is a package of the importer itself (then it is already in
``sys.modules`` when the importer runs).

The loops are counted twice: at module level (what Python executes at import
time) and counting every import, inside functions and under
``TYPE_CHECKING`` too (the loops an import inside a function only hides).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("pipeline", "connectors", "transforms", "query", "bench")

# Floors from the ground up. A module belongs to the floor of the longest
# prefix listed here (a prefix matches a module and its submodules). A module
# may import its own floor and any floor below; importing a higher floor is an
# "upward import".
FLOORS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "ground",
        (
            "pipeline",  # the package itself (its __init__ is empty)
            "pipeline.errors",
            "pipeline.logs",
            "pipeline.events",
            "pipeline.types",
            "pipeline.config",
            "pipeline.focusconfig",
            "pipeline.apiconfig",
            "pipeline.configtypes",
            "connectors",
            "transforms",
        ),
    ),
    (
        "source",
        (
            "pipeline.decode",
            "pipeline.source",
            "connectors.debezium",
            "connectors.postgres",
            "connectors.rowsecurity",
            "connectors.truncate",
        ),
    ),
    ("views", ("pipeline.views", "pipeline.aggregate", "transforms.")),
    ("sinks", ("connectors.",)),
    (
        "engine",
        (
            "pipeline.worker",
            "pipeline.batch",
            "pipeline.processor",
            "pipeline.redelivery",
            "pipeline.sinkwriter",
            "pipeline.toast",
            "pipeline.dlq",
            "pipeline.dlqtopic",
            "pipeline.checkpoints",
            "pipeline.groups",
            "pipeline.layout",
            "pipeline.layoutguard",
            "pipeline.deletewindow",
            "pipeline.loaded",
            "pipeline.definitions",
            "pipeline.publication",
            "pipeline.taskheal",
            "pipeline.timelag",
            "pipeline.metrics",
            "pipeline.partitions",
            "pipeline.readahead",
            "pipeline.startup",
        ),
    ),
    (
        "operations",
        (
            "pipeline.snapshot",
            "pipeline.verify",
            "pipeline.repair",
            "pipeline.replay",
            "pipeline.plan",
            "pipeline.status",
            "pipeline.roles",
        ),
    ),
    ("query", ("query",)),
    ("roof", ("pipeline.stack", "pipeline.demo", "bench")),
    ("cli", ("pipeline.cli",)),
)

TOP, FUNCTION, TYPING = "module", "function", "type-checking"


@dataclass(frozen=True)
class Import:
    """One import of a project module, with where it sits."""

    source: str
    target: str
    line: int
    kind: str
    implicit: bool = False  # a parent package's __init__, run by the import


def discover(root: Path) -> dict[str, Path]:
    """Map every module name of :data:`PACKAGES` to its file."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _Collector(ast.NodeVisitor):
    def __init__(self, module: str, is_package: bool, modules: set[str]) -> None:
        self.module = module
        self.package = module if is_package else module.rpartition(".")[0]
        self.modules = modules
        self.found: list[Import] = []
        self.other_in_function = 0
        self._function = 0
        self._typing = 0

    def _kind(self) -> str:
        if self._function:
            return FUNCTION
        return TYPING if self._typing else TOP

    def _add(self, target: str, line: int, implicit: bool = False) -> None:
        if target.split(".")[0] in PACKAGES:
            kind = self._kind()
            self.found.append(Import(self.module, target, line, kind, implicit))
        elif self._function and not implicit:
            self.other_in_function += 1

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._function += 1
        self.generic_visit(node)
        self._function -= 1

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self._typing += 1
            for child in node.body:
                self.visit(child)
            self._typing -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add_parents(self, target: str, line: int) -> None:
        own = self.module.split(".")
        parts = target.split(".")
        for depth in range(1, len(parts)):
            if parts[:depth] != own[:depth]:
                self._add(".".join(parts[:depth]), line, implicit=True)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)
            self._add_parents(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package.split(".")
            base = base[: len(base) - (node.level - 1)]
            if node.module:
                base.append(node.module)
            origin = ".".join(base)
        else:
            origin = node.module or ""
        for alias in node.names:
            candidate = f"{origin}.{alias.name}"
            target = candidate if candidate in self.modules else origin
            self._add(target, node.lineno)
            self._add_parents(target, node.lineno)


def collect(modules: dict[str, Path]) -> tuple[list[Import], int]:
    """All project imports, and the count of other imports inside functions."""
    names = set(modules)
    imports: list[Import] = []
    other = 0
    for name, path in modules.items():
        collector = _Collector(name, path.name == "__init__.py", names)
        collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
        # One per (line, target): ``from a import x, y`` counts once.
        imports.extend(dict.fromkeys(i for i in collector.found if i.target in names))
        other += collector.other_in_function
    return imports, other


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm (recursive, as deep as the longest import chain):
    the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    """Whether ``goal`` is reachable from ``start`` along the graph's edges."""
    seen = {start}
    todo = [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        for nxt in graph.get(node, ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return False


def module_graph(
    modules: Iterable[str], imports: Iterable[Import], kinds: Iterable[str]
) -> dict[str, set[str]]:
    """Module -> the modules it imports by imports of the given kinds."""
    wanted = set(kinds)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for imp in imports:
        if imp.kind in wanted and imp.target != imp.source:
            graph[imp.source].add(imp.target)
    return graph


def floor_of(module: str) -> int:
    """The index in :data:`FLOORS` of the module's floor (longest prefix)."""
    best, best_len = -1, -1
    for number, (_, prefixes) in enumerate(FLOORS):
        for prefix in prefixes:
            matches = (
                module.startswith(prefix)
                if prefix.endswith(".")
                else module == prefix or module.startswith(prefix + ".")
            )
            if matches and len(prefix) > best_len:
                best, best_len = number, len(prefix)
    if best < 0:
        raise SystemExit(f"bench.imports: no floor for module {module}")
    return best


def _lines(path: Path) -> int:
    return len(path.read_text(encoding="utf-8").splitlines())


def _show(imports: Iterable[Import]) -> list[str]:
    return [f"    {i.source}:{i.line} -> {i.target} ({i.kind})" for i in imports]


def report(root: Path) -> str:
    """The whole report as text."""
    modules = discover(root)
    imports, other_in_function = collect(modules)
    graph = module_graph(modules, imports, [TOP])

    out = [f"modules: {len(modules)} in {', '.join(PACKAGES)}"]
    explicit = [i for i in imports if not i.implicit]
    out.append(f"project imports: {len(explicit)}")

    loops = strongly_connected(graph)
    out.append(f"module-level import loops: {len(loops)}")
    out.extend(f"    {' <-> '.join(loop)}" for loop in loops)

    hidden = strongly_connected(module_graph(modules, imports, [TOP, FUNCTION, TYPING]))
    out.append(
        f"import loops counting imports in functions and TYPE_CHECKING: {len(hidden)}"
    )
    out.extend(f"    {' <-> '.join(loop)}" for loop in hidden)

    in_function = [i for i in explicit if i.kind == FUNCTION]
    closing = [i for i in in_function if reaches(graph, i.target, i.source)]
    out.append(
        f"project imports inside functions: {len(in_function)} "
        f"(in {len({i.source for i in in_function})} modules); "
        f"other imports inside functions: {other_in_function}"
    )
    out.append(f"  of which would close a loop at module level: {len(closing)}")
    out.extend(_show(closing))
    typing_only = [i for i in explicit if i.kind == TYPING]
    out.append(f"project imports under TYPE_CHECKING: {len(typing_only)}")

    upward = [i for i in explicit if floor_of(i.target) > floor_of(i.source)]
    out.append(
        "floors: " + " < ".join(name for name, _ in FLOORS) + f"; upward imports: "
        f"{len(upward)} ({sum(i.kind == TOP for i in upward)} at module level)"
    )
    for imp in upward:
        src, dst = FLOORS[floor_of(imp.source)][0], FLOORS[floor_of(imp.target)][0]
        out.append(f"{_show([imp])[0]} [{src} -> {dst}]")

    sizes = sorted(((_lines(p), m) for m, p in modules.items()), reverse=True)
    over = [s for s in sizes if s[0] > 400]
    out.append(f"modules over 400 lines: {len(over)}; largest:")
    out.extend(f"    {lines:5d} {name}" for lines, name in sizes[:12])
    return "\n".join(out)


def main() -> None:
    """Print the report for the repository in the current directory."""
    print(report(Path.cwd()))


if __name__ == "__main__":
    main()
