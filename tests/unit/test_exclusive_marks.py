"""Every integration test that takes a shared service of the stack down, or
changes its settings, is marked ``exclusive``.

``scripts/test`` runs the integration tests that are not marked two at a
time on one stack. A test that stops Redis there would fail the test
running beside it, and only now and then, when the two happen to meet. So
the mark is checked here, from the source: a test (or a module helper, and
then the whole module) that

- stops or starts a service of the stack (``runner.stop_service``,
  ``runner.start_service``);
- sends a signal to a process it found through the stack (``os.kill`` or
  ``os.killpg`` beside ``runner.status`` or ``runner.data_dir``);
- changes the settings of the stack's Redis (``config_set`` beside
  ``redis_admin_client``)

must carry the mark.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

INTEGRATION = Path(__file__).resolve().parent.parent / "integration"


def _called(node: ast.AST) -> set[str]:
    """The names of everything ``node`` calls (``a.b.c()`` gives ``c``,
    and ``runner.x()`` gives ``runner.x`` too)."""
    names = set()
    for sub in ast.walk(node):
        if not isinstance(sub, ast.Call):
            continue
        func = sub.func
        if isinstance(func, ast.Name):
            names.add(func.id)
        elif isinstance(func, ast.Attribute):
            names.add(func.attr)
            if isinstance(func.value, ast.Name):
                names.add(f"{func.value.id}.{func.attr}")
        # a function handed over to be called (asyncio.to_thread(f, ...))
        for arg in sub.args:
            if isinstance(arg, ast.Attribute):
                names.add(arg.attr)
    return names


def disrupts(node: ast.AST) -> str | None:
    """Why ``node`` disturbs a shared service, or None."""
    called = _called(node)
    if called & {"stop_service", "start_service"}:
        return "stops or starts a service of the stack"
    if called & {"os.kill", "os.killpg"} and called & {
        "runner.status",
        "runner.data_dir",
    }:
        return "signals a process of the stack"
    if "config_set" in called and "redis_admin_client" in called:
        return "changes the settings of the stack's Redis"
    return None


def _marked_exclusive(decorators: list[ast.expr]) -> bool:
    return any("exclusive" in ast.unparse(d) for d in decorators)


def unmarked(source: str) -> list[str]:
    """What in a test module disturbs the stack without the mark."""
    tree = ast.parse(source)
    module_marked = any(
        isinstance(stmt, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in stmt.targets)
        and "exclusive" in ast.unparse(stmt.value)
        for stmt in tree.body
    )
    if module_marked:
        return []
    found = []
    for stmt in tree.body:
        if not isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            continue
        why = disrupts(stmt)
        if why is None:
            continue
        is_test = stmt.name.startswith(("test_", "Test"))
        if is_test and _marked_exclusive(stmt.decorator_list):
            continue
        where = stmt.name if is_test else f"{stmt.name} (a helper: mark the module)"
        found.append(f"{where}: {why}")
    return found


def test_every_integration_test_that_disturbs_the_stack_is_marked_exclusive() -> None:
    modules = sorted(INTEGRATION.glob("*.py"))
    assert len(modules) > 50, f"no integration tests found under {INTEGRATION}"
    found = [
        f"{path.name}: {what}"
        for path in modules
        for what in unmarked(path.read_text())
    ]
    assert not found, "not marked exclusive:\n" + "\n".join(found)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def test_a(stack):\n    runner.stop_service(stack, 'redis')\n",
            ["test_a: stops or starts a service of the stack"],
        ),
        (
            "@pytest.mark.exclusive\n"
            "def test_a(stack):\n    runner.stop_service(stack, 'redis')\n",
            [],
        ),
        (
            "pytestmark = [pytest.mark.integration, pytest.mark.exclusive]\n"
            "def test_a(stack):\n    runner.stop_service(stack, 'redis')\n",
            [],
        ),
        (
            "async def _down(stack):\n"
            "    await asyncio.to_thread(runner.start_service, stack, 'redis')\n",
            [
                "_down (a helper: mark the module): "
                "stops or starts a service of the stack"
            ],
        ),
        (
            "def test_a(stack):\n"
            "    pid = int((runner.data_dir(stack) / 'redis.pid').read_text())\n"
            "    os.kill(pid, signal.SIGSTOP)\n",
            ["test_a: signals a process of the stack"],
        ),
        (
            "def test_a(worker):\n    os.kill(worker.pid, signal.SIGKILL)\n",
            [],
        ),
        (
            "def test_a():\n"
            "    redis_admin_client().config_set('min-replicas-to-write', 1)\n",
            ["test_a: changes the settings of the stack's Redis"],
        ),
        (
            "def test_a(url):\n"
            "    redis.Redis.from_url(url).config_set('maxmemory-policy', 'x')\n",
            [],
        ),
    ],
    ids=[
        "stop",
        "marked",
        "module-marked",
        "helper",
        "signal",
        "own-process",
        "redis-settings",
        "own-redis",
    ],
)
def test_what_counts_as_disturbing_the_stack(source: str, expected: list[str]) -> None:
    assert unmarked(source) == expected
