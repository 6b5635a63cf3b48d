"""The benchmark's scenario configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from bench.scenario import bench_config
from pipeline.config import load, parse

pytestmark = pytest.mark.unit

SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "readside",
    "sasl.password": "kafka-pw",
}


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


def test_scenario_logs_in_to_kafka_and_the_stores_as_the_base_config(
    tmp_path: Path,
) -> None:
    """A closed stack takes only clients with credentials: a scenario's
    config carries the base config's ``kafka.client`` and each sink's login,
    secrets revealed, and loads."""
    base = parse(
        {
            "source": {"dsn": "postgresql://db.example/shop", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": "k:9094", "client": SASL},
            "sinks": {
                "cache": {
                    "type": "redis",
                    "url": "redis://r:6379/0",
                    "username": "readside",
                    "password": "redis-pw",
                },
                "docs": {"type": "mongodb", "uri": "mongodb://u:mongo-pw@m:27017/"},
            },
            "views": {"t": {"table": "public.t", "sinks": ["cache", "docs"]}},
        },
        "<test>",
    )
    data = bench_config(base, "benchx", "all", ["redis", "mongodb"])
    assert data["kafka"]["bootstrap_servers"] == "k:9094"
    assert data["kafka"]["client"] == SASL
    assert data["sinks"]["redis"]["username"] == "readside"
    assert data["sinks"]["redis"]["password"] == "redis-pw"
    assert data["sinks"]["mongodb"]["uri"] == "mongodb://u:mongo-pw@m:27017/"
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(data))
    cfg = load(path)
    assert cfg.kafka.client_conf() == base.kafka.client_conf()
