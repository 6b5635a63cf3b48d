"""The Redis store's ground the sink's parts share: its client and key layouts.

Where a view's keys are (the :class:`~connectors.redis.keys.Layout` of each
generation) is in :mod:`connectors.redis.keys`; ``p@gen`` names the live
generation and ``p@gen.mirror`` the one a rebuild fills. Here:
:func:`classify` (redis-py's exceptions onto readside's errors) and
:class:`RedisStore`, the client, the registered script, and the layouts of a
view's generations as last seen, which the writes
(:mod:`connectors.redis.sink`), the generations
(:mod:`connectors.redis.generations`) and the reads
(:mod:`connectors.redis.reads`) build on.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Mapping, Sequence

import redis
import redis.asyncio
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.base import StoreSink, ViewTarget
from connectors.redis import RedisSinkConfig
from connectors.redis.keys import GUARD_SCRIPT, Layout, parse_state, text_or_none
from connectors.redis.wait import Durability
from pipeline.errors import ConfigError, FatalError, ReadsideError, TransientError

logger = logging.getLogger(__name__)

FETCH_CHUNK = 1000
#: seconds between two looks at the server's eviction policy while writing
POLICY_CHECK_S = 60.0


#: Refusals of a Redis that is up but may not write for now, by the first
#: word of the error: too few replicas (``min-replicas-to-write``), a failed
#: snapshot to disk (``stop-writes-on-bgsave-error``), a script or module
#: that keeps it busy, a replica cut off from its primary. Each ends without
#: readside, so the write is retried as when the store is down.
WAIT_CODES = frozenset({"NOREPLICAS", "MISCONF", "BUSY", "MASTERDOWN"})


def classify(exc: Exception) -> ReadsideError:
    """Map a redis-py exception onto a readside error class, by type."""
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return FatalError(
            f"redis: not authorized (the sink's username and password): {exc}"
        )
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, rex.ConnectionError) and isinstance(
        cause, ssl.SSLCertVerificationError
    ):
        # a certificate no retry will make trusted
        return FatalError(
            f"redis: the server's TLS certificate is not trusted (the sink's "
            f"ca_cert, verify): {exc}"
        )
    if isinstance(exc, rex.NoPermissionError | rex.ExternalAuthProviderError):
        return FatalError(f"redis: not authorized: {exc}")
    if isinstance(
        exc,
        rex.ConnectionError  # includes BusyLoadingError
        | rex.TimeoutError
        | rex.ReadOnlyError  # a replica after failover
        | rex.OutOfMemoryError
        | rex.TryAgainError
        | rex.ClusterDownError,
    ):
        return TransientError(f"redis: {type(exc).__name__}: {exc}")
    if isinstance(exc, rex.ResponseError) and str(exc).split(" ", 1)[0] in WAIT_CODES:
        return TransientError(f"redis: {exc}")
    return FatalError(f"redis: {type(exc).__name__}: {exc}")


class RedisStore(StoreSink[RedisSinkConfig]):
    """The client, the script and the generations' layouts of a Redis sink.

    Args:
        name: the sink's name in the configuration.
        cfg: connection settings, ``docs_per_call`` and what to wait for
            before a batch is acknowledged (:mod:`connectors.redis.wait`).
        targets: view name -> where the view lives (the key prefix) and its
            options (``ttl_s``, ``tombstone_ttl_s``, ``indexes``, ``hash_tag``).
    """

    store = "redis"
    driver_errors = (rex.RedisError,)
    classify = staticmethod(classify)

    def __init__(
        self, name: str, cfg: RedisSinkConfig, targets: Mapping[str, ViewTarget]
    ) -> None:
        super().__init__(name, cfg, targets)
        #: when the eviction policy is looked at again (time.monotonic())
        self._policy_due = 0.0
        self._live: dict[str, int] = {}  # view -> live generation, as last seen
        #: view -> the generation a rebuild fills (None: none), as last seen
        self._mirrors: dict[str, int | None] = {}
        # built now so that bad options fail at start
        self._layouts = {(v, 1): Layout(t) for v, t in self.targets.items()}
        self._client: redis.Redis | None = None
        #: the reads' asyncio client, and the event loop it was made for
        self._aclient: redis.asyncio.Redis | None = None
        self._aloop: asyncio.AbstractEventLoop | None = None
        self._sha: str | None = None
        self._durability = Durability(name, cfg)

    # -- connection -------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = self.cfg.connect(
                socket_timeout=self.cfg.timeout_s,
                socket_connect_timeout=self.cfg.timeout_s,
                decode_responses=True,
                # The worker retries with backoff; fail fast here.
                retry=Retry(NoBackoff(), 0),
                # WAIT and WAITAOF count the writes of their own connection.
                single_connection_client=self._durability.enabled,
            )
        return self._client

    def open(self) -> None:
        try:
            self._sha = str(self.client.script_load(GUARD_SCRIPT))
            self._refuse_eviction()
            self._durability.check(self.client)
            for view in self.targets:
                self._resolve(view)
        except rex.RedisError as exc:
            raise classify(exc) from exc
        logger.info("redis sink open sink=%s views=%d", self.name, len(self.targets))

    def _refuse_eviction(self) -> None:
        """Refuse a server that may evict any key when its memory is full:
        when the sink opens, and every :data:`POLICY_CHECK_S` while it writes
        (a policy changed with ``CONFIG SET`` then stops the worker before
        its next write).

        Redis then drops documents the worker was told are stored (the
        reads miss them, and nothing writes them again until their rows
        change) and their version keys (a replayed older change then
        overwrites a newer document). ``noeviction`` refuses writes
        instead, which the worker waits out; the ``volatile-*`` policies
        evict only keys with a time to live, which readside gives only to
        the documents and tombstones of a view with ``ttl_s`` or
        ``tombstone_ttl_s``.

        Raises:
            ConfigError: naming the sink and the server's setting.
        """
        try:
            policy = str(self.client.info("memory").get("maxmemory_policy", ""))
        except rex.ResponseError as exc:  # NoPermissionError: INFO not allowed
            self._policy_due = float("inf")  # never allowed: said once
            logger.warning(
                "redis sink cannot read the server's maxmemory-policy sink=%s "
                "error=%s: if it is an allkeys-* policy, Redis may evict documents",
                self.name,
                exc,
            )
            return
        if not policy.startswith("allkeys-"):
            self._policy_due = time.monotonic() + POLICY_CHECK_S
            return
        raise ConfigError(
            f"sinks.{self.name}: the Redis server may evict any key when its "
            f"memory is full (maxmemory-policy {policy}), losing documents "
            "and the versions that guard them; set maxmemory-policy "
            "noeviction on the server (writes are then refused and retried "
            "while it is full)"
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _layout(self, view: str, gen: int | None = None) -> Layout:
        """The layout of generation ``gen`` (default: the live one as last seen)."""
        if gen is None:
            if view not in self._live:
                return self._resolve(view)
            gen = self._live[view]
        layout = self._layouts.get((view, gen))
        if layout is None:
            layout = self._layouts[(view, gen)] = Layout(self._target(view), gen)
        return layout

    def _resolve(self, view: str) -> Layout:
        """Read the live (and mirrored) generation of ``view``; the live layout."""
        return self._seen_values(view, self.client.mget(self._state_keys(view)))

    def _state_keys(self, view: str) -> list[str]:
        """The keys naming ``view``'s live and mirrored generations."""
        base = Layout(self._target(view))
        return [base.generation_key, base.mirror_key]

    def _seen_values(self, view: str, values: Sequence[bytes | str | None]) -> Layout:
        """Take the values of :meth:`_state_keys`; the live layout."""
        raw, mirror = values
        return self._seen(view, parse_state(text_or_none(raw), text_or_none(mirror)))

    def _seen(self, view: str, state: tuple[int, int | None]) -> Layout:
        self._live[view], self._mirrors[view] = state
        return self._layout(view, state[0])
