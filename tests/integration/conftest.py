"""Fixtures of the pipeline integration tests: a probed stack, isolated pipelines.

A missing or unhealthy service fails the tests that need it, naming the
service; nothing is skipped.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import leftovers
import pytest
from harness import (
    PG_ADMIN_DSN,
    Pipeline,
    connect_client,
    create_pipeline,
    stack_config,
    stack_kafka,
)

from pipeline import kafkaclient
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import runner

PipelineFactory = Callable[..., Pipeline]


@pytest.fixture(scope="session")
def stack() -> Any:
    """The local stack's config, after probing every service."""
    cfg = stack_config()
    try:
        rows = runner.status(cfg)
    except Exception as exc:
        pytest.fail(
            f"cannot probe the local stack ({cfg.data_dir}): {exc!r}; "
            "run `readside stack up`"
        )
    bad = [f"{r.name} (port {r.port}): {r.problem}" for r in rows if not r.healthy]
    if bad:
        pytest.fail(
            "local stack not healthy, run `readside stack up`: " + "; ".join(bad)
        )
    admin = kafkaclient.admin(KafkaConfig(**stack_kafka()))
    for what in leftovers.sweep(PG_ADMIN_DSN, connect_client(), admin):
        print(f"removed what an interrupted session left: {what}", file=sys.stderr)
    return cfg


@pytest.fixture
def make_pipeline(stack: Any, tmp_path: Path) -> Iterator[PipelineFactory]:
    """Create isolated pipelines; torn down (workers, connector, slot, db) after."""
    made: list[Pipeline] = []

    def make(
        schema_sql: str,
        tables: list[str],
        views: dict[str, Any],
        worker: dict[str, Any] | None = None,
    ) -> Pipeline:
        sub = tmp_path / f"p{len(made)}"
        sub.mkdir()
        p = create_pipeline(sub, schema_sql, tables, views, worker)
        made.append(p)
        return p

    yield make
    keep = os.environ.get("READSIDE_KEEP_TEST_DATA") == "1"
    for p in made:
        p.close(drop_stores=not keep)
