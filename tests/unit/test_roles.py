"""The SQL of readside's least-privilege roles (no database needed)."""

from __future__ import annotations

import pytest

from pipeline import config
from pipeline.roles import role_names, roles_sql

pytestmark = pytest.mark.unit


def test_roles_sql_grants_only_what_each_role_needs() -> None:
    cfg = config.parse(
        {
            "source": {
                "dsn": "postgresql://u@db/shop",
                "tables": ["public.orders", "sales.lines"],
            },
            "sinks": {"cache": {"type": "redis"}},
            "views": {"orders": {"table": "public.orders", "sinks": ["cache"]}},
        }
    )
    text = roles_sql(cfg, "rs")
    assert role_names("rs") == {
        "capture": "rs_capture",
        "reader": "rs_reader",
        "watermark": "rs_watermark",
    }
    assert 'CREATE ROLE "rs_capture" LOGIN REPLICATION;' in text
    assert 'CREATE ROLE "rs_reader" LOGIN;' in text
    assert 'CREATE ROLE "rs_watermark" LOGIN;' in text
    assert "SUPERUSER" not in text.upper().replace("NOSUPERUSER", "")
    tables = '"public"."orders", "sales"."lines", "public"."readside_heartbeat"'
    for role in ("rs_capture", "rs_reader"):
        assert (
            f'GRANT SELECT ON {tables}, "public"."readside_signal" TO "{role}";' in text
        )
        assert f'GRANT USAGE ON SCHEMA "public", "sales" TO "{role}";' in text
    assert (
        'GRANT INSERT, UPDATE ON "public"."readside_heartbeat" TO "rs_capture";' in text
    )
    # an incremental snapshot's window marks (Debezium writes them)
    assert 'GRANT INSERT ON "public"."readside_signal" TO "rs_capture";' in text
    assert 'INSERT ON "public"."readside_signal" TO "rs_reader"' not in text
    assert "rs_watermark" not in text.split("LOGIN;  -- the API's watermark")[1]
    # what a table with row-level security needs, for both readers
    assert (
        '-- CREATE POLICY readside_reads ON <table> FOR SELECT TO "rs_capture", '
        '"rs_reader" USING (true);' in text
    )
