"""The session's sweep of what interrupted test sessions left (leftovers.py).

A test pipeline's topics whose database is gone belong to no running
session: the sweep deletes them. The topics of a pipeline whose database
exists (a session running beside this one) stay.
"""

from __future__ import annotations

import uuid
from typing import Any

import leftovers
import psycopg
import pytest
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]  # no __all__
from harness import PG_ADMIN_DSN, connect_client, stack_kafka, wait_for

from pipeline import kafkaclient
from pipeline.sourceconfig import KafkaConfig

pytestmark = pytest.mark.integration


def _topics(admin: Any) -> set[str]:
    return set(admin.list_topics(timeout=10).topics)


def test_sweep_deletes_the_topics_of_test_pipelines_whose_database_is_gone(
    stack: Any,
) -> None:
    admin = kafkaclient.admin(KafkaConfig(**stack_kafka()))
    gone, alive = uuid.uuid4().hex[:10], uuid.uuid4().hex[:10]
    abandoned = [f"it{gone}.public.orders", f"__debezium-heartbeat.it{gone}"]
    running = [f"it{alive}.public.orders", f"__debezium-heartbeat.it{alive}"]
    # not a test pipeline's name: nine hex digits, or another prefix
    other = [f"it{gone[:9]}.public.orders", f"shop{gone}.public.orders"]
    made = [*abandoned, *running, *other]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "rs_it_{alive}"')
    try:
        for fut in admin.create_topics([NewTopic(t, 1, 1) for t in made]).values():
            fut.result()
        wait_for(lambda: set(made) <= _topics(admin), 30, "topics made")

        removed = leftovers.sweep(PG_ADMIN_DSN, connect_client(), admin)

        assert any("topics of" in r for r in removed), removed
        wait_for(lambda: not set(abandoned) & _topics(admin), 30, "topics deleted")
        assert set(running + other) <= _topics(admin)
    finally:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "rs_it_{alive}"')
        left = sorted(set(made) & _topics(admin))
        if left:
            for fut in admin.delete_topics(left, operation_timeout=30).values():
                fut.result()
