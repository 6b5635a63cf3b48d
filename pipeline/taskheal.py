"""The connector's task, failed on a service that did not answer,
restarted once that service answers again.

Two outages fail Debezium's task for good: it stays ``FAILED`` until
someone restarts it, and no change of any table reaches Kafka meanwhile
(the replication slot keeps them), while the workers apply nothing new:

* **the schema registry** (``kafka.format: avro``): Apicurio's converter in
  Kafka Connect registers the schema of a table that changed (a column
  added, dropped, widened) when it writes the first record of it. If the
  registry does not answer then, the record fails. Neither side waits the
  outage out: Apicurio retries only a registry that says it is too busy,
  Connect only errors marked retriable;
* **the source database**: Connect starts a task again after its own
  restart, a rebalance of its workers, or Debezium's restart after a lost
  connection. Debezium waits out a source that refuses its first
  connection, but not one that refuses or cuts a later connection of the
  task's start (the type registry's, the timestamp utilities'): a
  PostgreSQL shutting down or restarting while the task starts, or a
  source out of connection slots. A fault run met it: Connect killed, then
  PostgreSQL restarted just as the task started again
  (``tests/integration/test_source_outage.py`` refuses the start's second
  connection).

:class:`Watch` (a worker's: one per :class:`Cause`, the source's always,
the registry's when the records are Avro; :class:`Watches` answers them
with one look at Connect) looks at the connector's tasks every
:data:`CHECK_INTERVAL_S`. A task its cause failed is restarted
(Connect's restart of the failed tasks) once that service answers again,
with a warning; a task failed again at once is restarted less and less
often, every :data:`REPEAT_S` at most. The task goes on from the last
offset Connect committed, and the records after it that it sends again are
redeliveries the worker recognises. While the service does not answer, the
watch says so, again every :data:`REPEAT_S`. A task failed for another
reason (a lost position, a change too large) is left to ``readside
status``, which shows its trace and the way out. Every worker restarts it
alike: Connect restarts only the tasks still failed. A Connect that does
not answer is looked at again after :data:`CONNECT_DOWN_S`, a service
after its :attr:`Cause.down_s`, so a side that hangs holds the worker's
loop for a 3 s timeout that seldom, not at every look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from connectors.debezium import (
    ConnectClient,
    failed_on_registry,
    failed_on_source,
    restart_failed_tasks,
)
from pipeline.config import Config
from pipeline.errors import ReadsideError
from pipeline.source.registry import SchemaRegistry

logger = logging.getLogger(__name__)

#: seconds between two looks at the connector's tasks
CHECK_INTERVAL_S = 10.0
#: seconds between two lines about a service that still does not answer
REPEAT_S = 300.0
#: seconds to the next look after Connect, or the service a task waits for,
#: did not answer (each ask holds the worker's loop up to its 3 s timeout
#: when the other side hangs)
CONNECT_DOWN_S = 60.0
REGISTRY_DOWN_S = 30.0
SOURCE_DOWN_S = 10.0
#: how long the look whether the source answers may take
SOURCE_TIMEOUT_S = 3


@dataclass(frozen=True)
class Cause:
    """A service whose outage fails the connector's task for good."""

    #: as the warnings name it
    name: str
    #: the ids of the tasks it failed, in Connect's status of the connector
    failed: Callable[[dict[str, Any]], list[int]]
    #: whether it answers now
    answers: Callable[[], bool]
    #: seconds to the next look while a task waits for it and it does not answer
    down_s: float

    @classmethod
    def registry(cls, cfg: Config) -> Cause:
        """The schema registry: any HTTP answer but a 5xx."""
        return cls(
            "the schema registry",
            failed_on_registry,
            SchemaRegistry.of(cfg.kafka).answers,
            REGISTRY_DOWN_S,
        )

    @classmethod
    def source(cls, cfg: Config) -> Cause:
        """The source database: the workers' login runs ``SELECT 1``."""
        dsn = cfg.source.dsn.get_secret_value()

        def answers() -> bool:
            try:
                with psycopg.connect(
                    dsn, autocommit=True, connect_timeout=SOURCE_TIMEOUT_S
                ) as conn:
                    conn.execute("SELECT 1")
            except psycopg.Error:
                return False
            return True

        return cls("the source database", failed_on_source, answers, SOURCE_DOWN_S)


def watches(cfg: Config) -> Watches:
    """A worker's watches: the source's, and the registry's for Avro records."""
    causes = [Cause.source(cfg)]
    if cfg.kafka.format == "avro":
        causes.append(Cause.registry(cfg))
    connect = _connect(cfg)
    return Watches([Watch(cfg, cause, connect=connect) for cause in causes])


def _connect(cfg: Config) -> ConnectClient:
    """Connect's client of the watches: asked between two polls, so a
    Connect that hangs holds the worker's loop this long."""
    return replace(ConnectClient.of(cfg.connect), timeout_s=3.0)


class Watches:
    """A worker's watches, answered by one look at the connector's status."""

    def __init__(self, watches: list[Watch]) -> None:
        self.watches = watches

    def due(self) -> bool:
        return any(w.due() for w in self.watches)

    def check(self) -> None:
        due = [w for w in self.watches if w.due()]
        if due:
            status = due[0].status()
            for w in due:
                w.judge(status)


class Watch:
    """A worker's look at the connector's tasks that ``cause`` fails."""

    def __init__(
        self,
        cfg: Config,
        cause: Cause,
        clock: Callable[[], float] = time.monotonic,
        connect: ConnectClient | None = None,
    ) -> None:
        self.connect = connect or _connect(cfg)
        self.path = f"/connectors/{cfg.connect.connector}"
        self.cause = cause
        self.clock = clock
        self._next = 0.0
        #: while a failed task waits for the service, when to say so again
        self._waiting_said: float | None = None
        #: restarts in a row that the service failed again
        self._restarts = 0

    def due(self) -> bool:
        return self.clock() >= self._next

    def check(self) -> None:
        """Restart the tasks the cause failed, if it answers now."""
        self.judge(self.status())

    def status(self) -> dict[str, Any] | None:
        """Connect's status of the connector; None if Connect did not answer."""
        try:
            return self.connect.request("GET", f"{self.path}/status") or {}
        except ReadsideError as exc:  # Connect down: readside status says so
            logger.debug("connector tasks not checked error=%s", exc)
            return None

    def judge(self, status: dict[str, Any] | None) -> None:
        """Restart the tasks ``status`` shows the cause failed, if it answers
        now; ``None``: Connect did not answer, looked at again later."""
        if status is None:
            self._next = self.clock() + CONNECT_DOWN_S
            return
        self._next = self.clock() + CHECK_INTERVAL_S
        failed = self.cause.failed(status)
        if not failed:
            self._waiting_said = None
            self._restarts = 0
            return
        tasks = ",".join(map(str, failed))
        if not self.cause.answers():
            self._next = self.clock() + self.cause.down_s
            if self._waiting_said is None or self.clock() >= self._waiting_said:
                self._waiting_said = self.clock() + REPEAT_S
                logger.warning(
                    "connector task(s) %s failed on %s, which does not answer; "
                    "restarted once it does",
                    tasks,
                    self.cause.name,
                )
            return
        try:
            restart_failed_tasks(self.connect, self.path)
        except ReadsideError as exc:  # Connect rebalancing: at the next check
            logger.warning("connector task restart not taken error=%s", exc)
            return
        self._waiting_said = None
        self._restarts += 1
        # A task that fails again at once (the service answers, but not to
        # the task: a login refused, no connection slot left) is restarted
        # less and less often, every REPEAT_S at most.
        self._next = self.clock() + min(
            REPEAT_S, CHECK_INTERVAL_S * 2 ** (self._restarts - 1)
        )
        logger.warning(
            "connector task(s) %s had failed on %s, which answers again: "
            "restarted (%d in a row)",
            tasks,
            self.cause.name,
            self._restarts,
        )
