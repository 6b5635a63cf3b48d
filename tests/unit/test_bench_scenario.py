"""The benchmark's scenario configs."""

from __future__ import annotations

import pytest
from psycopg.conninfo import conninfo_to_dict

from bench.scenario import bench_config
from pipeline.config import parse

pytestmark = pytest.mark.unit


def test_scenario_reads_the_catalog_of_a_database_that_always_exists() -> None:
    """The configured database (the demo's) may not exist yet on a fresh
    stack; a store that derives its mapping from the catalog would wait on it
    for ever, so a scenario reads the server's maintenance database."""
    base = parse(
        {
            "source": {
                "dsn": "postgresql://bench:secret@db.example:5433/shop",
                "tables": ["public.orders"],
            },
            "kafka": {"bootstrap_servers": "k:9092", "group_id": "g"},
            "sinks": {"es": {"type": "elasticsearch", "hosts": ["http://e:9200"]}},
            "views": {"orders": {"table": "public.orders", "sinks": ["es"]}},
        },
        "<test>",
    )
    cfg = bench_config(base, "benchx", "elasticsearch", ["elasticsearch"])
    dsn = conninfo_to_dict(cfg["source"]["dsn"])
    assert dsn["dbname"] == "postgres"
    assert (dsn["host"], dsn["port"], dsn["user"]) == ("db.example", "5433", "bench")
    assert dsn["password"] == "secret"
