"""What an installed readside distribution holds, and whether all it imports resolves.

Run by the interpreter of a virtualenv that holds the readside wheel and its
dependencies alone (``tests/integration/test_wheel_install.py``), in isolated
mode and away from the source tree::

    VENV/bin/python -I wheel_probe.py readside /path/of/the/source/tree

It prints one JSON object:

- ``packages``: each top-level package of the distribution and where it was
  imported from (the test checks that is the virtualenv);
- ``source_on_path``: entries of ``sys.path`` inside the source tree (none);
- ``problems``: every module of the distribution that fails to import, every
  ``import`` statement in it (module level or inside a function: readside
  imports many of its own modules lazily) whose module or name does not
  resolve, and every entry point that fails to load;
- ``commands``: every command path of the ``readside`` console script, from
  the click group itself (``[]`` is the top level).

It uses the standard library and click (a dependency of readside) only.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata as md
import importlib.util
import json
import sys
from pathlib import Path, PurePosixPath
from typing import Any

OPTIONAL = ("ImportError", "ModuleNotFoundError")


def main(dist_name: str, source: str) -> None:
    dist = md.distribution(dist_name)
    files = [PurePosixPath(str(f)) for f in dist.files or []]
    tops = sorted(
        {f.parts[0] for f in files if len(f.parts) == 2 and f.name == "__init__.py"}
    )
    modules = {
        _module_name(f): Path(str(dist.locate_file(f)))
        for f in files
        if f.suffix == ".py" and f.parts[0] in tops
    }
    problems: list[str] = []
    for name in sorted(modules):
        problems.extend(_check_module(name, modules[name]))
    for ep in dist.entry_points:
        try:
            ep.load()
        except Exception as exc:
            problems.append(f"entry point {ep.group}:{ep.name} = {ep.value}: {exc!r}")
    packages = {top: str(importlib.import_module(top).__file__) for top in tops}
    root = Path(source).resolve()
    on_path = [p for p in sys.path if p and Path(p).resolve().is_relative_to(root)]
    print(
        json.dumps(
            {
                "packages": packages,
                "source_on_path": on_path,
                "problems": problems,
                "commands": _commands(dist),
            }
        )
    )


def _module_name(path: PurePosixPath) -> str:
    parts = list(path.with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _check_module(name: str, path: Path) -> list[str]:
    """Import ``name`` (a ``__main__`` module is only read: importing runs
    it), then resolve every import statement in its source."""
    problems = []
    if name.rpartition(".")[2] != "__main__":
        try:
            importlib.import_module(name)
        except Exception as exc:
            return [f"{name}: import fails: {exc!r}"]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for line, target, names in _imports(tree, name, is_pkg):
        problem = _resolve(target, names)
        if problem is not None:
            problems.append(f"{name} line {line}: {problem}")
    return problems


def _imports(
    tree: ast.AST, module: str, is_pkg: bool
) -> list[tuple[int, str, list[str] | None]]:
    """Every import in ``tree`` as (line, absolute module, imported names),
    leaving out those under ``if TYPE_CHECKING:`` and those a ``try`` guards
    with ``except ImportError`` (optional by design)."""
    found: list[tuple[int, str, list[str] | None]] = []
    package = module if is_pkg else module.rpartition(".")[0]

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", "")
            if name == "TYPE_CHECKING":
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Try(self, node: ast.Try) -> None:
            guarded = any(_catches_import_error(h) for h in node.handlers)
            for child in [*([] if guarded else node.body), *node.handlers]:
                self.visit(child)
            for child in [*node.orelse, *node.finalbody]:
                self.visit(child)

        def visit_Import(self, node: ast.Import) -> None:
            found.extend((node.lineno, alias.name, None) for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            target = node.module or ""
            if node.level:
                target = importlib.util.resolve_name("." * node.level + target, package)
            found.append((node.lineno, target, [a.name for a in node.names]))

    Visitor().visit(tree)
    return found


def _catches_import_error(handler: ast.ExceptHandler) -> bool:
    kinds = handler.type
    elts = kinds.elts if isinstance(kinds, ast.Tuple) else [kinds]
    return any(isinstance(e, ast.Name) and e.id in OPTIONAL for e in elts)


def _resolve(target: str, names: list[str] | None) -> str | None:
    try:
        spec = importlib.util.find_spec(target)
    except Exception as exc:
        return f"{target}: {exc!r}"
    if spec is None:
        return f"no module named {target!r}"
    if not names:
        return None
    try:
        mod = importlib.import_module(target)
    except Exception as exc:
        return f"{target}: import fails: {exc!r}"
    missing = [
        n for n in names if n != "*" and not hasattr(mod, n) and not _sub(target, n)
    ]
    return f"from {target} import {', '.join(missing)}: not found" if missing else None


def _sub(package: str, name: str) -> bool:
    try:
        return importlib.util.find_spec(f"{package}.{name}") is not None
    except ModuleNotFoundError:  # ``package`` is a module, not a package
        return False


def _commands(dist: Any) -> list[list[str]]:
    import click

    (script,) = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    paths: list[list[str]] = []

    def walk(cmd: click.Command, path: list[str]) -> None:
        paths.append(path)
        if isinstance(cmd, click.Group):
            for name, sub in sorted(cmd.commands.items()):
                walk(sub, [*path, name])

    walk(script.load(), [])
    return paths


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
