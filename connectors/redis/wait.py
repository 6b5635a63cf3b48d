"""What a Redis sink waits for before it acknowledges a batch.

Redis replies to a write once it is applied in memory. With the sink's
defaults that reply is the acknowledgement: a crash of the server can then
lose the last second of writes whose offsets the worker already committed
(``appendfsync everysec``), or everything since the last RDB save (no
append-only file). Two settings of :class:`~connectors.redis.RedisSinkConfig`
make the sink wait, after each batch's writes and before :meth:`write`
returns:

* ``wait_aof``: the batch is fsynced to the server's append-only file.
  Redis >= 7.2 waits with ``WAITAOF 1 <wait_replicas> <timeout>``, which also
  waits for that many replicas to fsync it. Older servers have no
  ``WAITAOF``; they keep the promise only with ``appendfsync always`` (each
  write is fsynced before its reply), which :meth:`Durability.check` accepts.
  Any other server setting is refused when the sink opens, naming the option.
* ``wait_replicas``: that many replicas hold the batch (``WAIT``, when
  ``WAITAOF`` is not used).

A wait that does not reach the count within ``wait_timeout_ms`` raises
:class:`~pipeline.errors.TransientError`: the worker retries the batch and
commits nothing. Both commands count the writes of the calling connection, so
the sink then uses a single connection; a batch that wrote nothing new (a
retry whose writes an earlier attempt applied) first writes the key
:data:`SYNC_KEY`, which moves the connection's offset past every earlier write
of the server, so that the wait covers the earlier attempt too.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis

from pipeline.errors import ConfigError, TransientError

logger = logging.getLogger(__name__)

#: written (value ``1``) before waiting when a batch wrote nothing; outside
#: every view's ``p:*`` / ``p#*`` / ``p@gen`` keys
SYNC_KEY = "readside@sync"
#: the first Redis version with ``WAITAOF``
WAITAOF_SINCE = (7, 2)


class WaitSettings(Protocol):
    """The settings of a Redis sink that say what it waits for."""

    @property
    def wait_aof(self) -> bool: ...

    @property
    def wait_replicas(self) -> int: ...

    @property
    def wait_timeout_ms(self) -> int: ...


def _version(client: redis.Redis) -> tuple[int, ...]:
    raw = str(client.info("server").get("redis_version", "0"))
    return tuple(int(p) for p in raw.split(".") if p.isdigit())


def _config_get(client: redis.Redis, *names: str) -> dict[str, str] | None:
    """Server settings, or ``None`` when ``CONFIG`` is refused (managed Redis)."""
    out: dict[str, str] = {}
    try:
        for name in names:
            out.update({str(k): str(v) for k, v in client.config_get(name).items()})
    except redis.ResponseError:
        return None
    return out


class Durability:
    """The waits of one Redis sink, checked against the server at open."""

    def __init__(self, sink_name: str, cfg: WaitSettings) -> None:
        self.sink_name = sink_name
        self.local = 1 if cfg.wait_aof else 0
        self.replicas = cfg.wait_replicas
        self.timeout_ms = cfg.wait_timeout_ms
        self._waitaof = False

    @property
    def enabled(self) -> bool:
        """Whether the sink waits at all (and must use a single connection)."""
        return bool(self.local or self.replicas)

    def check(self, client: redis.Redis) -> None:
        """Decide how to wait; refuse a server that cannot keep ``wait_aof``.

        Raises:
            ConfigError: ``wait_aof`` is set and the server's append-only file
                is off, or it has neither ``WAITAOF`` nor ``appendfsync always``.
        """
        if not self.enabled:
            return
        version = _version(client)
        self._waitaof = self.local == 1 and version >= WAITAOF_SINCE
        if not self.local:
            return
        option = f"sinks.{self.sink_name}.wait_aof"
        conf = _config_get(client, "appendonly", "appendfsync")
        if conf is not None and conf.get("appendonly") != "yes":
            raise ConfigError(
                f"{option}: the Redis server's append-only file is off "
                f"(appendonly {conf.get('appendonly')}); turn it on "
                "(appendonly yes) or unset the option"
            )
        if self._waitaof:
            return
        fsync = None if conf is None else conf.get("appendfsync")
        if fsync == "always":
            logger.info(
                "redis sink fsyncs through appendfsync=always sink=%s",
                self.sink_name,
            )
            return
        shown = ".".join(map(str, version))
        raise ConfigError(
            f"{option}: Redis {shown} has no WAITAOF (Redis >= 7.2) and does not "
            f"fsync before it acknowledges (appendfsync {fsync or 'unknown'}); "
            "set appendfsync always on the server, upgrade it, or unset the option"
        )

    def wait(self, client: redis.Redis, wrote: bool) -> None:
        """Return once the batch just written is as durable as configured.

        Raises:
            TransientError: the count was not reached within the timeout.
        """
        if not self.enabled:
            return
        if not wrote:
            client.set(SYNC_KEY, "1")
        if self._waitaof:
            got: Any = client.execute_command(  # type: ignore[no-untyped-call] # redis-py leaves it untyped
                "WAITAOF", self.local, self.replicas, self.timeout_ms
            )
            local, replicas = int(got[0]), int(got[1])
            if local < self.local or replicas < self.replicas:
                raise TransientError(
                    f"redis: the batch was fsynced locally {local} of {self.local} "
                    f"and by {replicas} of {self.replicas} replica(s) within "
                    f"{self.timeout_ms} ms (WAITAOF)"
                )
        elif self.replicas:
            reached = int(client.wait(self.replicas, self.timeout_ms))
            if reached < self.replicas:
                raise TransientError(
                    f"redis: the batch reached {reached} of {self.replicas} "
                    f"replica(s) within {self.timeout_ms} ms (WAIT)"
                )
