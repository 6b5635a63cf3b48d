from __future__ import annotations

from pathlib import Path

import pytest

from bench.imports import (
    FUNCTION,
    TOP,
    TYPING,
    collect,
    discover,
    floor_of,
    module_graph,
    report,
    strongly_connected,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def _tree(root: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    modules = discover(root)
    imports, _ = collect(modules)
    return module_graph(modules, imports, [TOP])


def test_module_graph_import_inside_function_not_a_module_level_loop(
    tmp_path: Path,
) -> None:
    _tree(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/a.py": "from pipeline.b import x\n",
            "pipeline/b.py": "x = 1\ndef f():\n    from pipeline.a import y\n",
        },
    )
    text = report(tmp_path)
    assert "module-level import loops: 0" in text
    assert "in functions and TYPE_CHECKING: 1\n    pipeline.a <-> pipeline.b" in text
    assert "would close a loop at module level: 1" in text
    assert "pipeline.b:3 -> pipeline.a (function)" in text


def test_module_graph_type_checking_import_kept_apart(tmp_path: Path) -> None:
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "from pipeline.b import x\n",
        "pipeline/b.py": (
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from pipeline.a import y\nx = 1\n"
        ),
    }
    graph = _tree(tmp_path, files)
    assert strongly_connected(graph) == []
    modules = discover(tmp_path)
    imports, _ = collect(modules)
    every = module_graph(modules, imports, [TOP, FUNCTION, TYPING])
    assert strongly_connected(every) == [["pipeline.a", "pipeline.b"]]


def test_module_graph_package_init_reached_from_outside_is_an_edge(
    tmp_path: Path,
) -> None:
    graph = _tree(
        tmp_path,
        {
            "pipeline/__init__.py": "",
            "pipeline/config.py": "from query.api_config import ApiConfig\n",
            "query/__init__.py": "from query.client import ReadClient\n",
            "query/api_config.py": "ApiConfig = 1\n",
            "query/client.py": "from pipeline.config import Config\n",
        },
    )
    assert graph["pipeline.config"] == {"query", "query.api_config"}
    assert strongly_connected(graph) == [["pipeline.config", "query", "query.client"]]


def test_floor_of_longest_prefix_wins() -> None:
    assert floor_of("pipeline.errors") < floor_of("pipeline.views")
    assert floor_of("pipeline.views") < floor_of("connectors.redis_sink")
    assert floor_of("connectors.debezium") < floor_of("pipeline.views")
    assert floor_of("pipeline.worker") < floor_of("pipeline.snapshot.load")
    assert floor_of("pipeline.snapshot.load") < floor_of("query.client")
    assert floor_of("query.client") < floor_of("pipeline.cli")


def test_repository_has_no_import_loop_even_counting_function_imports() -> None:
    modules = discover(REPO)
    imports, _ = collect(modules)
    every = module_graph(modules, imports, [TOP, FUNCTION, TYPING])
    assert strongly_connected(every) == []
