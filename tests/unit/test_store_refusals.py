"""Refusals of a store that is up but may not write for now are waited out
(TransientError), never taken for a wrong login or a bad document
(tests/integration/test_store_refuses_writes.py drives them on the stack)."""

from __future__ import annotations

import opensearchpy
import pytest
import redis.exceptions as rex

from connectors.elasticsearch.store import classify as search_error
from connectors.opensearch.client import translated
from connectors.redis.store import classify as redis_error
from pipeline.errors import FatalError, TransientError

pytestmark = pytest.mark.unit

BLOCK = {
    "error": {
        "type": "cluster_block_exception",
        "reason": "index [i] blocked by: [FORBIDDEN/8/index write (api)];",
    },
    "status": 403,
}


def test_an_index_block_is_waited_out_any_other_403_is_not() -> None:
    blocked = translated(opensearchpy.AuthorizationException(403, "block", BLOCK))
    assert isinstance(search_error(blocked), TransientError)
    assert "the index is blocked (403)" in str(search_error(blocked))
    denied = {"error": {"type": "security_exception", "reason": "no"}, "status": 403}
    refused = translated(opensearchpy.AuthorizationException(403, "denied", denied))
    assert isinstance(search_error(refused), FatalError)


@pytest.mark.parametrize(
    "text",
    [
        "NOREPLICAS Not enough good replicas to write.",
        "MISCONF Redis is configured to save RDB snapshots, but it's currently "
        "unable to persist to disk.",
        "BUSY Redis is busy running a script.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set "
        "to 'no'.",
    ],
)
def test_redis_refusals_that_end_by_themselves_are_waited_out(text: str) -> None:
    assert isinstance(redis_error(rex.ResponseError(text)), TransientError)


@pytest.mark.parametrize(
    "text", ["BUSYKEY Target key name already exists.", "ERR unknown command"]
)
def test_other_redis_refusals_stop_the_worker(text: str) -> None:
    assert isinstance(redis_error(rex.ResponseError(text)), FatalError)
