"""The read API's Redis connection (connectors.redis.aio) on the real Redis.

One connection carries every get by id of an event loop, its replies
matched to the commands in order. What would break that, tried on the
stack's Redis as readside's ACL user (plain and TLS): many commands at once
each get their own reply; a caller that leaves before its reply leaves the
others theirs; replies held back past ``timeout_s`` (``CLIENT PAUSE``) and a
connection killed under commands in flight (``CLIENT KILL``) fail those
commands as outages, and the next command gets its own reply on a new
connection; error replies are redis-py's exceptions, so ``classify`` maps
them as for the blocking client; the URL's database is the one read.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions as rex
from harness import redis_admin_client, redis_sink, stack_config

from connectors.redis import RedisSinkConfig
from connectors.redis.aio import Pipelined, handles
from connectors.redis.store import classify
from pipeline.errors import FatalError, TransientError
from pipeline.stack.redis_server import redis_admin, redis_client

pytestmark = pytest.mark.integration


def _config(**over: Any) -> RedisSinkConfig:
    return RedisSinkConfig.model_validate({"type": "redis", **redis_sink(), **over})


@pytest.fixture
def keys() -> Iterator[dict[str, str]]:
    """200 keys with values of their own, written by the operator; deleted
    after."""
    base = f"pipelined-{uuid.uuid4().hex[:8]}"
    values = {
        f"{base}:{n}": f'{{"n":{n},"pad":"{"x" * (n % 50)}"}}' for n in range(200)
    }
    with redis_admin_client() as admin:
        admin.mset(values)
        try:
            yield values
        finally:
            admin.delete(*values)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_many_commands_at_once_each_get_their_own_reply(keys: dict[str, str]) -> None:
    rng = random.Random(5)
    names = list(keys)
    asks = [
        [*rng.sample(names, rng.randint(1, 5)), "pipelined-none"] for _ in range(400)
    ]

    async def go() -> tuple[list[list[str | None]], int]:
        client = Pipelined(_config())
        try:
            answers = await asyncio.gather(*(client.mget(a) for a in asks))
            opened = {id(client._conn)}
            answers += [await client.mget(a) for a in asks[:20]]
            opened.add(id(client._conn))
            return answers, len(opened)
        finally:
            await client.aclose()

    answers, connections = _run(go())
    expected = [[keys.get(k) for k in a] for a in asks]
    assert answers == expected + expected[:20]
    assert connections == 1


def test_over_tls_as_the_acl_user(keys: dict[str, str]) -> None:
    stack = stack_config()
    tls = redis_client(Path(stack.data_dir), stack.redis_tls_port)
    cfg = RedisSinkConfig.model_validate({"type": "redis", **tls})
    assert cfg.secure
    names = list(keys)[:10]

    async def go() -> list[str | None]:
        client = Pipelined(cfg)
        try:
            return await client.mget(names)
        finally:
            await client.aclose()

    assert _run(go()) == [keys[k] for k in names]


def _held(client: Pipelined, ms: int) -> asyncio.Task[Any]:
    """``WAIT 1 ms``: with no replica to wait for, Redis holds the reply (and
    every command after it on the connection) for ``ms`` (0: for ever)."""
    return asyncio.create_task(client.execute("WAIT", "1", str(ms)))


def test_a_caller_that_leaves_leaves_the_others_their_replies(
    keys: dict[str, str],
) -> None:
    a, b, c = list(keys)[:3]

    async def go() -> tuple[Any, list[str | None], list[str | None]]:
        client = Pipelined(_config())
        try:
            hold = _held(client, 800)
            await asyncio.sleep(0)  # written first
            first = asyncio.create_task(client.mget([a]))
            left = asyncio.create_task(client.mget([b]))
            last = asyncio.create_task(client.mget([c]))
            await asyncio.sleep(0.2)
            left.cancel()
            return await hold, await first, await last
        finally:
            await client.aclose()

    assert _run(go()) == (0, [keys[a]], [keys[c]])


def test_replies_held_back_past_the_timeout_fail_as_an_outage_then_it_recovers(
    keys: dict[str, str],
) -> None:
    a, b = list(keys)[:2]

    async def go() -> tuple[list[Any], list[str | None]]:
        client = Pipelined(_config(timeout_s=0.5))
        try:
            hold = _held(client, 1500)
            await asyncio.sleep(0)
            held = await asyncio.gather(
                hold, client.mget([a]), client.mget([b]), return_exceptions=True
            )
            await asyncio.sleep(1.2)  # the late replies came; none is read
            return held, await client.mget([b, a])
        finally:
            await client.aclose()

    held, after = _run(go())
    assert all(isinstance(h, rex.TimeoutError) for h in held), held
    assert all(isinstance(classify(h), TransientError) for h in held)
    assert after == [keys[b], keys[a]]


def test_a_connection_killed_under_commands_in_flight_fails_them_then_reconnects(
    keys: dict[str, str],
) -> None:
    a, b = list(keys)[:2]
    name = f"pipelined-{uuid.uuid4().hex[:8]}"

    async def go() -> tuple[list[Any], list[str | None]]:
        client = Pipelined(_config())
        try:
            await client.execute("CLIENT", "SETNAME", name)
            flight = [_held(client, 0)]
            await asyncio.sleep(0)
            flight += [asyncio.create_task(client.mget([k])) for k in (a, b)]
            await asyncio.sleep(0.2)
            with redis_admin_client() as admin:
                (mine,) = [c for c in admin.client_list() if c["name"] == name]
                admin.client_kill_filter(_id=mine["id"])
            failed = await asyncio.gather(*flight, return_exceptions=True)
            return failed, await client.mget([a, b])
        finally:
            await client.aclose()

    failed, after = _run(go())
    assert all(isinstance(f, rex.ConnectionError) for f in failed), failed
    assert all(isinstance(classify(f), TransientError) for f in failed)
    assert after == [keys[a], keys[b]]


def test_error_replies_are_redis_py_exceptions_and_the_connection_stays_usable(
    keys: dict[str, str],
) -> None:
    a = next(iter(keys))

    async def go() -> list[Any]:
        client = Pipelined(_config())
        out: list[Any] = []
        try:
            for args in (("NOSUCHCOMMAND",), ("FLUSHALL",)):
                try:
                    await client.execute(*args)
                except rex.RedisError as exc:
                    out.append(exc)
            out.append(await client.mget([a]))
            return out
        finally:
            await client.aclose()

    unknown, refused, after = _run(go())
    assert type(unknown) is rex.ResponseError
    assert isinstance(refused, rex.NoPermissionError)  # the ACL user's limit
    assert isinstance(classify(refused), FatalError)
    assert after == [keys[a]]


def test_a_wrong_password_is_refused_as_not_authorized() -> None:
    async def go() -> None:
        client = Pipelined(_config(password="not-the-password-Qm41"))
        try:
            await client.mget(["pipelined-none"])
        finally:
            await client.aclose()

    with pytest.raises(rex.AuthenticationError) as refused:
        _run(go())
    error = classify(refused.value)
    assert isinstance(error, FatalError)
    assert "not-the-password-Qm41" not in str(error)


def test_the_urls_database_is_the_one_read() -> None:
    key = f"pipelined-db-{uuid.uuid4().hex[:8]}"
    stack = stack_config()
    admin = redis_admin(Path(stack.data_dir), stack.redis_port)
    with redis.Redis.from_url(
        admin["url"].removesuffix("/0") + "/3",
        username=admin["username"],
        password=admin["password"],
    ) as in_three:
        in_three.set(key, "in three")
        try:
            url = f"redis://127.0.0.1:{stack.redis_port}/3"

            async def go() -> list[str | None]:
                client = Pipelined(_config(url=url))
                try:
                    return await client.mget([key])
                finally:
                    await client.aclose()

            assert _run(go()) == ["in three"]
            assert _run(_plain_db0(key)) == [None]
        finally:
            in_three.delete(key)


async def _plain_db0(key: str) -> list[str | None]:
    client = Pipelined(_config())
    try:
        return await client.mget([key])
    finally:
        await client.aclose()


def test_a_url_option_only_redis_py_applies_goes_to_redis_py() -> None:
    stack = stack_config()
    plain = _config()
    assert handles(plain)
    assert handles(_config(url=f"redis://127.0.0.1:{stack.redis_port}/2"))
    odd = _config(url=f"redis://127.0.0.1:{stack.redis_port}/0?health_check_interval=5")
    assert not handles(odd)
