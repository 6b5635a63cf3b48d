"""Whether the source still publishes every change of a worker's tables,
and the connector still captures them as readside set it.

readside's publication is changed by hand at times: a table dropped from it,
a row filter or a column list added, deletes no longer published, the whole
publication dropped. PostgreSQL then leaves those changes out of the stream
without an error; the connector and its heartbeats go on, so the views of
those tables stay as they were while their lag reads zero
(:func:`connectors.postgres.publication_problems` says what and the way out).
The connector's config is changed by hand at times too, through Connect's
REST API or a UI: a table left out of ``table.include.list``, deletes added
to ``skipped.operations``, a column list or a transform added
(:func:`connectors.debezium.config_problems`). And a table an aggregate view
follows only with REPLICA IDENTITY FULL can lose it, or gain a partition
without it (:mod:`pipeline.aggregate.identity`); and a row-level security
policy can hide rows from the connector's role, which its snapshots then
leave out (:func:`connectors.rowsecurity.capture_problems`). And the
connector's task can fail on a change it cannot pass, stopping every
table's capture: one larger than the topics take, or after its position in
the WAL was lost (:func:`connectors.debezium.task_problems`).

:class:`Watch` looks when the worker starts and every
``worker.source_check_s`` (a minute), and logs each problem as an error
(again every :data:`REPEAT_S` while it lasts); the gauge
``readside_source_capture_problems`` counts them. ``readside status`` and
the status page show the same problems. The worker goes on: the changes that
do reach it are right.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import psycopg

from connectors import rowsecurity
from connectors.debezium import ConnectClient, connector_problems, task_problems
from connectors.postgres import generated_columns, publication_problems
from pipeline.aggregate import identity
from pipeline.config import Config
from pipeline.errors import ReadsideError
from pipeline.metrics import CAPTURE_PROBLEMS
from pipeline.views import View

logger = logging.getLogger(__name__)

#: seconds between two error lines about the same problem
REPEAT_S = 600.0


class Watch:
    """The worker's look at the publication of its views' tables."""

    def __init__(
        self,
        cfg: Config,
        views: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
        prepared: Iterable[View] = (),
    ) -> None:
        self.cfg = cfg
        #: the worker's views, prepared: the tables whose REPLICA IDENTITY
        #: FULL its aggregate views need (pipeline.aggregate.identity)
        self.prepared = list(prepared)
        by_view = cfg.effective_views()
        tables = {t for v in views for t in by_view[v].tables()}
        #: the heartbeats too: without them a view's time lag reads stale
        self.tables = sorted(tables | {cfg.source.heartbeat_table})
        self.dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
        self.clock = clock
        #: each problem said, with when it was last logged
        self.said: dict[str, float] = {}
        #: asked between two polls: a Connect that hangs holds the loop this long
        self.connect = replace(ConnectClient.of(cfg.connect), timeout_s=3.0)
        #: while Connect does not answer, when to say so again
        self._connect_unread: float | None = None
        self._next = 0.0

    def due(self) -> bool:
        return self.clock() >= self._next

    def check(self) -> None:
        """Look at the publication; a source that does not answer is asked
        again at the next check."""
        self._next = self.clock() + self.cfg.worker.source_check_s
        try:
            with psycopg.connect(self.dsn, connect_timeout=5) as conn:
                problems = publication_problems(conn, self.cfg, self.tables)
                problems += identity.problems(conn, identity.needs_full(self.prepared))
                problems += rowsecurity.capture_problems(conn, self.cfg)
                reader = rowsecurity.reader_problem(conn, self.tables)
                problems += [] if reader is None else [reader]
                generated = generated_columns(conn, self.cfg)
        except psycopg.Error as exc:
            logger.warning("publication not checked error=%s", exc)
            return
        try:
            problems += connector_problems(self.cfg, self.connect, generated)
            problems += task_problems(self.cfg, self.connect)
        except ReadsideError as exc:  # Connect down, or not open to workers
            if self._connect_unread is None or self.clock() >= self._connect_unread:
                self._connect_unread = self.clock() + REPEAT_S
                logger.warning("connector config not checked error=%s", exc)
        else:
            self._connect_unread = None
        self.take(problems)

    def take(self, problems: list[str]) -> None:
        """Log what is new (or due again) among ``problems``, and what ended."""
        CAPTURE_PROBLEMS.set(len(problems))
        now = self.clock()
        for problem in problems:
            last = self.said.get(problem)
            if last is None or now - last >= REPEAT_S:
                self.said[problem] = now
                logger.error("source: %s", problem)
        for gone in [p for p in self.said if p not in problems]:
            del self.said[gone]
            logger.info("source: resolved: %s", gone.split(":", 1)[0])
