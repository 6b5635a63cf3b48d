"""The Debezium connector's settings built from the config (no Connect needed)."""

from __future__ import annotations

import pytest

from connectors.debezium import connector_config
from connectors.postgres import captured_tables
from pipeline import config

pytestmark = pytest.mark.unit


def _cfg(tables: list[str] | None = None) -> config.Config:
    tables = tables or ["public.orders", "public.customers"]
    return config.parse(
        {
            "source": {"dsn": "postgresql://u:pw@db:5432/shop", "tables": tables},
            "sinks": {"cache": {"type": "redis"}},
            "views": {"orders": {"table": "public.orders", "sinks": ["cache"]}},
        }
    )


def test_connector_config_publication_is_made_by_readside_through_roots() -> None:
    settings = connector_config(_cfg())
    assert settings["publication.autocreate.mode"] == "disabled"
    assert settings["publish.via.partition.root"] == "true"


def test_connector_config_includes_exactly_the_captured_tables() -> None:
    cfg = _cfg()
    included = connector_config(cfg)["table.include.list"].split(",")
    assert included == captured_tables(cfg)
    assert included == [
        *cfg.source.tables,
        cfg.source.heartbeat_table,
        cfg.source.signal_table,
    ]


def test_captured_tables_heartbeat_listed_as_source_table_appears_once() -> None:
    cfg = _cfg(["public.orders", "public.readside_heartbeat"])
    assert captured_tables(cfg) == [
        "public.orders",
        "public.readside_heartbeat",
        "public.readside_signal",
    ]
