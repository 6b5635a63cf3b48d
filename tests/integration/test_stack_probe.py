"""The local stack's health probe of a search node, on the stack's
Elasticsearch: a node whose index is being created is healthy once the index
is; a node with an index that stays red is reported as such."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from pipeline.stack.services import CLUSTER_HEALTH_WAIT_S, cluster_health

pytestmark = pytest.mark.integration


@pytest.fixture
def stranded(stack: Any) -> Iterator[tuple[Elasticsearch, str]]:
    """An index whose only shard cannot be allocated (red) until its
    allocation filter is lifted."""
    es = Elasticsearch(f"http://127.0.0.1:{stack.elasticsearch_port}")
    name = f"probe-{uuid.uuid4().hex[:8]}"
    es.indices.create(
        index=name,
        settings={
            "number_of_shards": 1,
            "number_of_replicas": 0,
            "index.routing.allocation.require._name": "no-such-node",
        },
        wait_for_active_shards="0",
    )
    try:
        yield es, name
    finally:
        es.indices.delete(index=name, ignore_unavailable=True)
        es.close()


def test_probe_reports_an_index_that_stays_red(
    stack: Any, stranded: tuple[Elasticsearch, str]
) -> None:
    began = time.monotonic()
    status, headers = cluster_health(stack.elasticsearch_port)
    assert status == "red"
    assert headers.get("X-elastic-product") == "Elasticsearch"
    assert time.monotonic() - began >= CLUSTER_HEALTH_WAIT_S - 0.5  # it waited


def test_probe_waits_for_an_index_that_becomes_available(
    stack: Any, stranded: tuple[Elasticsearch, str]
) -> None:
    es, name = stranded
    found: list[str | None] = []
    probe = threading.Thread(
        target=lambda: found.append(cluster_health(stack.elasticsearch_port)[0])
    )
    probe.start()
    time.sleep(1.0)  # the probe is waiting on a red cluster
    assert not found
    es.indices.put_settings(
        index=name, settings={"index.routing.allocation.require._name": None}
    )
    probe.join(CLUSTER_HEALTH_WAIT_S + 5)
    assert found in (["green"], ["yellow"])
