"""The connector's task, failed on a schema registry that did not answer,
restarted once the registry answers again.

With ``kafka.format: avro``, Apicurio's converter in Kafka Connect registers
the schema of a table that changed (a column added, dropped, widened) when
it writes the first record of it. If the registry does not answer then,
the record fails, and Connect fails the task for good: it stays ``FAILED``
until someone restarts it, and no change of any table reaches Kafka
meanwhile (the replication slot keeps them). Neither side waits the outage
out: Apicurio retries only a registry that says it is too busy, Connect
only errors marked retriable.

:class:`Watch` (a worker's, when its records are Avro) looks at the
connector's tasks every :data:`CHECK_INTERVAL_S`. A task failed by the
registry's client is restarted (Connect's restart of the failed tasks) once
the registry answers again, with a warning; a task failed again at once is
restarted less and less often, every :data:`REPEAT_S` at most. The task
goes on from the last offset Connect committed, and the records after it
that it sends again are redeliveries the worker recognises. While the
registry does not answer, the watch says so, again every :data:`REPEAT_S`.
A task failed for another reason is left to ``readside status``, which
shows its trace. Every worker restarts it alike: Connect restarts only the
tasks still failed. A Connect that does not answer is looked at again after
:data:`CONNECT_DOWN_S`, a registry after :data:`REGISTRY_DOWN_S`, so a side
that hangs holds the worker's loop for a 3 s timeout that seldom, not at
every look.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from connectors.debezium import ConnectClient, failed_on_registry, restart_failed_tasks
from pipeline.config import Config
from pipeline.errors import ReadsideError
from pipeline.source.registry import SchemaRegistry

logger = logging.getLogger(__name__)

#: seconds between two looks at the connector's tasks
CHECK_INTERVAL_S = 10.0
#: seconds between two lines about a registry that still does not answer
REPEAT_S = 300.0
#: seconds to the next look after Connect, or the registry while a task
#: waits for it, did not answer (each ask holds the worker's loop up to its
#: 3 s timeout when the other side hangs)
CONNECT_DOWN_S = 60.0
REGISTRY_DOWN_S = 30.0


class Watch:
    """A worker's look at the connector's tasks (``kafka.format: avro``)."""

    def __init__(
        self,
        cfg: Config,
        clock: Callable[[], float] = time.monotonic,
        answers: Callable[[], bool] | None = None,
        connect: ConnectClient | None = None,
    ) -> None:
        #: asked between two polls: a Connect that hangs holds the loop this long
        self.connect = connect or replace(ConnectClient.of(cfg.connect), timeout_s=3.0)
        self.path = f"/connectors/{cfg.connect.connector}"
        #: whether the registry answers now (any HTTP answer but a 5xx)
        self.answers = answers or SchemaRegistry.of(cfg.kafka).answers
        self.clock = clock
        self._next = 0.0
        #: while a failed task waits for the registry, when to say so again
        self._waiting_said: float | None = None
        #: restarts in a row that the registry failed again
        self._restarts = 0

    def due(self) -> bool:
        return self.clock() >= self._next

    def check(self) -> None:
        """Restart the tasks the registry failed, if it answers now."""
        self._next = self.clock() + CHECK_INTERVAL_S
        try:
            status = self.connect.request("GET", f"{self.path}/status")
        except ReadsideError as exc:  # Connect down: readside status says so
            logger.debug("connector tasks not checked error=%s", exc)
            self._next = self.clock() + CONNECT_DOWN_S
            return
        failed = failed_on_registry(status or {})
        if not failed:
            self._waiting_said = None
            self._restarts = 0
            return
        if not self.answers():
            self._next = self.clock() + REGISTRY_DOWN_S
            if self._waiting_said is None or self.clock() >= self._waiting_said:
                self._waiting_said = self.clock() + REPEAT_S
                logger.warning(
                    "connector task(s) %s failed on the schema registry, which "
                    "does not answer; restarted once it does",
                    ",".join(map(str, failed)),
                )
            return
        try:
            restart_failed_tasks(self.connect, self.path)
        except ReadsideError as exc:  # Connect rebalancing: at the next check
            logger.warning("connector task restart not taken error=%s", exc)
            return
        self._waiting_said = None
        self._restarts += 1
        # A task that fails again at once (the registry answers, but not
        # the converter: its login refused, say) is restarted less and less
        # often, every REPEAT_S at most.
        self._next = self.clock() + min(
            REPEAT_S, CHECK_INTERVAL_S * 2 ** (self._restarts - 1)
        )
        logger.warning(
            "connector task(s) %s had failed on the schema registry, which "
            "answers again: restarted (%d in a row)",
            ",".join(map(str, failed)),
            self._restarts,
        )
