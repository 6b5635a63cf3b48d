"""The Redis store: documents as JSON strings, guarded by a Lua script.

The whole store is this package: its settings (:class:`RedisSinkConfig`,
here), its sink (:mod:`connectors.redis.sink`, the writes) built on the
client and key layouts (:mod:`~connectors.redis.store`, with
:mod:`~connectors.redis.keys`), the generations
(:mod:`~connectors.redis.generations`) and the reads and the filters its
indexes answer (:mod:`~connectors.redis.reads`), what it waits for before
acknowledging (:mod:`connectors.redis.wait`), and :data:`KIND`, the sink type ``redis``
(entry point ``readside.sinks``). The sink, and with it the driver, is
imported only when a sink is built, so validating a configuration loads no
driver.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr

from connectors.base import SinkKind
from pipeline.sinktypes import SinkConfig


class RedisSinkConfig(SinkConfig):
    """A Redis server. By default a batch is acknowledged once Redis applied it
    in memory; ``wait_aof`` and ``wait_replicas`` make the sink wait, after
    each batch and before the worker may commit, for the append-only file
    fsync (``WAITAOF``, Redis >= 7.2; or the server's ``appendfsync always``)
    and for that many replicas."""

    type: Literal["redis"]
    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    timeout_s: float = Field(5.0, gt=0)
    docs_per_call: int = Field(200, ge=1)
    wait_aof: bool = False
    wait_replicas: int = Field(0, ge=0)
    wait_timeout_ms: int = Field(1000, ge=1)

    def targets_overlap(self, a: str, b: str) -> bool:
        """A view is found by scanning ``prefix:*`` and ``prefix#*``: a prefix
        followed by ``:`` or ``#`` starts another view's key space."""
        pairs = ((a, b), (b, a))
        return a == b or any(x.startswith(y + s) for x, y in pairs for s in ":#")


KIND: SinkKind[RedisSinkConfig] = SinkKind(
    "redis", RedisSinkConfig, "connectors.redis.sink:RedisSink"
)
