"""pgsync's login to the Redis sink's server (``REDIS_URL``, its only way)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.pgsync.tool import redis_url
from connectors.redis import RedisSinkConfig

pytestmark = pytest.mark.unit


def sink(**settings: Any) -> RedisSinkConfig:
    return RedisSinkConfig(type="redis", **settings)


def test_redis_url_of_an_anonymous_sink_is_its_url() -> None:
    assert redis_url(sink(url="redis://r:6379/9")) == "redis://r:6379/9"


def test_redis_url_carries_the_sink_user_and_password_quoted() -> None:
    got = redis_url(sink(url="redis://r:6379/9", username="a b", password="p@ss:/w"))
    assert got == "redis://a%20b:p%40ss%3A%2Fw@r:6379/9"


def test_redis_url_password_beside_the_user_of_the_url() -> None:
    got = redis_url(sink(url="redis://bob@r:6379/9", password="pw"))
    assert got == "redis://bob:pw@r:6379/9"


def test_redis_url_of_a_tls_sink_is_rediss() -> None:
    got = redis_url(sink(url="redis://r:6379/9", password="pw", tls=True))
    assert got == "rediss://:pw@r:6379/9"
