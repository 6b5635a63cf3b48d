"""A store that is up but refuses writes for a while, as operators and
stores do:

* Elasticsearch: an index made read-only (``index.blocks.write``, as for a
  shrink, a clone or a restore; the disk's flood stage blocks it the same way),
  or closed;
* Redis: a primary that may not write (``min-replicas-to-write`` with its
  replicas away: ``NOREPLICAS``).

The worker must wait it out as it waits out a store that is down: stay alive,
commit nothing past it, dead-letter nothing, and converge once writes are
allowed again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from harness import Pipeline, redis_admin_client, wait_for

from pipeline.worker import build_sinks

# exclusive: makes the stack's Redis refuse every write
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) AS i;
"""


@contextmanager
def _search(p: Pipeline) -> Iterator[tuple[Any, str]]:
    """The Elasticsearch client of ``p`` and the alias of its items view."""
    es = build_sinks(p.config, ["elasticsearch"])["elasticsearch"]
    es.open()
    try:
        yield es.client, es.alias("items")  # type: ignore[attr-defined]
    finally:
        es.close()


@contextmanager
def _index_blocked(p: Pipeline) -> Iterator[None]:
    with _search(p) as (client, alias):
        client.indices.put_settings(index=alias, settings={"index.blocks.write": True})
        try:
            yield
        finally:
            client.indices.put_settings(
                index=alias, settings={"index.blocks.write": None}
            )


@contextmanager
def _index_closed(p: Pipeline) -> Iterator[None]:
    with _search(p) as (client, alias):
        index = next(iter(client.indices.get_alias(name=alias)))
        client.indices.close(index=index)
        try:
            yield
        finally:
            client.indices.open(index=index, wait_for_active_shards="all")


@contextmanager
def _no_replicas(_p: Pipeline) -> Iterator[None]:
    admin = redis_admin_client()
    before = admin.config_get("min-replicas-to-write")["min-replicas-to-write"]
    try:
        admin.config_set("min-replicas-to-write", 1)  # the stack's has none
        yield
    finally:
        admin.config_set("min-replicas-to-write", before)
        admin.close()


REFUSALS: dict[str, tuple[Callable[[Pipeline], object], str]] = {
    "elasticsearch": (_index_blocked, "cluster_block_exception"),
    "elasticsearch-closed": (_index_closed, "unreadable (index "),
    "redis": (_no_replicas, "NOREPLICAS"),
}


@pytest.mark.parametrize("sink", sorted(REFUSALS))
def test_writes_refused_for_a_while_are_waited_out(make_pipeline, sink):
    refusal, said = REFUSALS[sink]
    store = sink.split("-")[0]
    p = make_pipeline(
        SCHEMA, ["public.items"], {"items": {"table": "public.items", "sinks": [store]}}
    )
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    with refusal(p):  # type: ignore[attr-defined]
        frozen = p.committed()
        p.sql("UPDATE items SET name = name || ' (new)' WHERE id <= 10")
        wait_for(lambda: said in worker.log_text(), 60, f"the worker to meet {said}")
        p.sql("DELETE FROM items WHERE id > 15")  # more while refused
        wait_for(
            lambda: worker.log_text().count(said) >= 2 or not worker.alive(),
            60,
            "the worker to try again",
        )
        assert worker.alive(), worker.tail()
        assert p.committed() == frozen
    p.wait_drained(timeout=120)
    assert worker.alive(), worker.tail()
    assert p.dead_letters() == []
    p.assert_converged()
