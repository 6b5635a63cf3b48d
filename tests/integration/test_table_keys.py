"""Captured relations the connector cannot stream or key.

A table without a primary key, or with a generated column in it (pgoutput
streams none): its changes would reach Kafka without a key, which the
broker refuses in a compacted topic; the connector's task failed, the
changes of every captured table stopped with it, while ``config check`` and
``connector apply`` said OK. A view or an UNLOGGED table: PostgreSQL logs no
change of it. ``config check`` and ``connector apply`` must refuse each,
naming it and why (connectors.postgres.table_problems).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


def _refused(make_pipeline, schema: str, tables: list[str], *problems: str) -> None:
    """``config check`` and ``connector apply`` on ``tables`` (a view of the
    first) each exit non-zero, saying every one of ``problems``."""
    p = make_pipeline(
        schema, tables, {"first": {"table": tables[0], "sinks": ["redis"]}}
    )
    for args in (["config", "check"], ["connector", "apply"]):
        run = p.run_cli(*args, ok=False)
        said = run.stdout + run.stderr
        assert run.returncode != 0, said
        for problem in problems:
            assert problem in said, said


def test_a_generated_column_in_the_primary_key_is_refused_at_config_check(
    make_pipeline,
):
    """pgoutput streams no generated column, the key's neither: the
    connector's task failed on keyless records ("Unrecoverable exception from
    producer send callback") while ``config check`` said OK."""
    _refused(
        make_pipeline,
        "CREATE TABLE codes (n integer NOT NULL, label text, "
        "code text GENERATED ALWAYS AS ('c' || n) STORED PRIMARY KEY)",
        ["public.codes"],
        "source.tables: the primary key of public.codes holds generated "
        "column(s) code, which pgoutput never streams",
    )


def test_a_table_without_a_primary_key_is_refused_at_config_check(make_pipeline):
    """Its changes reach Kafka keyless: the connector's task failed, and the
    changes of every other table stopped with it, while ``config check``
    said OK."""
    _refused(
        make_pipeline,
        "CREATE TABLE items (id integer PRIMARY KEY, name text);"
        "CREATE TABLE logs (at integer, msg text)",
        ["public.items", "public.logs"],
        "source.tables: table public.logs has no primary key: its changes "
        "would reach Kafka without a key",
    )


def test_a_view_or_an_unlogged_table_is_refused_at_config_check(make_pipeline):
    _refused(
        make_pipeline,
        "CREATE TABLE items (id integer PRIMARY KEY, name text);"
        "CREATE VIEW items_v AS SELECT * FROM items;"
        "CREATE MATERIALIZED VIEW items_m AS SELECT * FROM items;"
        "CREATE UNLOGGED TABLE scratch (id integer PRIMARY KEY)",
        ["public.items", "public.items_v", "public.items_m", "public.scratch"],
        "public.items_v is a view: PostgreSQL streams no change of it",
        "public.items_m is a materialized view: PostgreSQL streams no change",
        "table public.scratch is UNLOGGED: PostgreSQL writes no WAL for its "
        "rows, so no change of it can be streamed; ALTER TABLE public.scratch "
        "SET LOGGED",
    )
