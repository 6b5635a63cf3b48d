"""readside against a Redis that wants an ACL user over TLS.

The stack's Redis answers TLS on ``stack.redis_tls_port`` with the stack's
certificate and knows one ACL user, whose password is kept in the stack's
data directory (``pipeline.stack.redis_server.redis_client``). The worker writes a
view through that user over TLS, ``verify`` and the read client read it
back the same way; Redis's own client list shows who wrote and where. A
wrong password, or a CA that did not sign the server's certificate, stops
the sink with a clear error that shows no password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from harness import Pipeline, redis_admin_client, wait_for

from connectors.redis import RedisSinkConfig
from connectors.redis.sink import RedisSink
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import tls
from pipeline.stack.redis_server import redis_client
from query.answer import Answer
from query.client import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["redis"]}}


def secure(p: Pipeline, stack: StackConfig, **override: str) -> dict[str, str]:
    """Point ``p``'s Redis sink at the TLS port as the ACL user (with
    ``override`` over the stack's settings); the settings it uses."""
    settings = {**redis_client(Path(stack.data_dir), stack.redis_tls_port)}
    settings.update(override)

    def mutate(data: dict[str, Any]) -> None:
        data["sinks"]["redis"] = {"type": "redis", **settings}

    p.rewrite(mutate)
    return settings


def _clients(stack: StackConfig) -> list[dict[str, Any]]:
    """Redis's client list, asked on the plain port as the operator's user."""
    with redis_admin_client() as admin:
        return list(admin.client_list())


def test_worker_writes_through_acl_user_over_tls_and_client_reads_back(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    settings = secure(p, stack)
    sink_cfg = p.config.sinks["redis"]
    assert isinstance(sink_cfg, RedisSinkConfig)
    assert sink_cfg.secure
    p.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 30) g")
    p.apply_connector()
    worker = p.start_worker()
    p.sql("UPDATE items SET name = name || '!' WHERE id % 5 = 0")
    p.sql("DELETE FROM items WHERE id = 7")
    p.wait_drained()
    p.assert_converged()  # verify reads the sink over TLS as the ACL user

    tls_port = f":{stack.redis_tls_port}"
    # the worker's connection: the ACL user, on the TLS port
    seen = wait_for(
        lambda: [
            c
            for c in _clients(stack)
            if c.get("user") == settings["username"]
            and str(c.get("laddr", "")).endswith(tls_port)
        ],
        30,
        "the worker's connection as the ACL user on the TLS port",
    )
    assert seen
    with ReadClient(p.config) as client:
        answer = client.get("items", 5)
        assert answer.doc is not None
        assert answer.doc["name"] == "item 5!"
        assert client.get("items", 7).doc is None
        # the server's reads on its event loop: the same user, TLS and answers
        on_loop = asyncio.run(_on_loop(client, ["5", "7"]))
        assert [(a.store, a.doc) for a in on_loop] == [
            ("redis", answer.doc),
            ("redis", None),
        ]
    # the ACL user is no administrator
    with redis.Redis.from_url(
        sink_cfg.client_url(), **sink_cfg.client_options()
    ) as as_user:
        assert as_user.acl_whoami() == settings["username"]
        with pytest.raises(redis.exceptions.NoPermissionError):
            as_user.flushall()

    check = p.run_cli("config", "check", "--no-sql")
    assert settings["password"] not in check.stdout + check.stderr
    assert settings["password"] not in worker.log_text()


def test_wrong_password_or_ca_stops_the_sink_with_a_clear_error(
    make_pipeline: Any, stack: StackConfig, tmp_path: Path
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    wrong = "not-the-password-Rk27"
    secure(p, stack, password=wrong)
    cfg = p.config.sinks["redis"]
    assert isinstance(cfg, RedisSinkConfig)
    sink = RedisSink("redis", cfg, {})
    with pytest.raises(FatalError, match="not authorized") as refused:
        sink.open()
    assert wrong not in str(refused.value)
    sink.close()

    with ReadClient(p.config) as client, pytest.raises(FatalError) as read:
        client.get("items", 1)
    assert "not authorized" in str(read.value), read.value
    assert wrong not in str(read.value)
    with ReadClient(p.config) as client, pytest.raises(FatalError) as read:
        asyncio.run(_on_loop(client, ["1"]))  # refused, not taken for an outage
    assert "not authorized" in str(read.value), read.value
    assert wrong not in str(read.value)

    worker = p.start_worker()
    text = worker.refused(60, "the worker with a wrong Redis password to exit", wrong)
    assert "not authorized" in text, worker.tail()

    # a CA that did not sign the server's certificate: refused, not retried
    other = tls.issue(tmp_path / "other-ca")
    secure(p, stack, ca_cert=str(other.ca))
    cfg = p.config.sinks["redis"]
    assert isinstance(cfg, RedisSinkConfig)
    sink = RedisSink("redis", cfg, {})
    with pytest.raises(FatalError, match="certificate is not trusted"):
        sink.open()
    sink.close()
    secure(p, stack)  # the teardown drops the view's keys


async def _on_loop(client: ReadClient, ids: list[str]) -> list[Answer]:
    """Gets by id as ``readside serve`` makes them (:meth:`ReadClient.aget`)."""

    async def pool(fn: Callable[[], Answer]) -> Answer:
        return await asyncio.to_thread(fn)

    try:
        return list(await asyncio.gather(*(client.aget("items", i, pool) for i in ids)))
    finally:
        await client.aclose()
