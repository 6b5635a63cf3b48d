"""Where a rebuild stands in the view's topics, the live consumer groups and
the connector (:mod:`pipeline.snapshot.rebuild`)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import cached_property

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.errors import FatalError, TransientError
from pipeline.groups import config_groups

logger = logging.getLogger(__name__)

#: at most this long, the drop also waits for the live workers to commit what
#: they consumed before the switch (their writes may still resolve the old one)
DRAIN_MAX_S = 60.0

Offsets = dict[str, int]  # "topic:partition" -> offset (JSON-friendly)


def part_key(topic: str, part: int) -> str:
    return f"{topic}:{part}"


def part_of(text: str) -> tuple[str, int]:
    topic, _, part = text.rpartition(":")
    return topic, int(part)


def wait_stream(
    cfg: Config,
    stopping: Callable[[], bool],
    timeout_s: float = 600.0,
    what: str = "The command",
) -> bool:
    """Wait until the connector produced every change committed so far: the
    replication slot confirmed an LSN taken now (Connect flushes its records
    before it commits their offsets, and Debezium confirms an LSN only then;
    docs/design.md, "The read-your-writes watermark", step 1). True once
    confirmed, or when there is no slot to wait for; False if ``stopping()``.

    Raises:
        TransientError: the source restarting or unreachable (the caller
            waits it out and goes on from its last recorded step).
        FatalError: not confirmed in ``timeout_s``.
    """
    src = cfg.source
    deadline = time.monotonic() + timeout_s
    query = (
        "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
        "WHERE slot_name = %s"
    )
    try:
        with psycopg.connect(src.dsn.get_secret_value(), autocommit=True) as conn:
            now = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
            lsn = str(now[0]) if now else "0/0"
            while not stopping():
                row = conn.execute(query, (lsn, src.slot)).fetchone()
                if row is None or row[0]:
                    return True  # confirmed, or no connector (no slot)
                if time.monotonic() > deadline:
                    raise FatalError(
                        f"the connector has not confirmed LSN {lsn} on slot "
                        f"{src.slot} in {timeout_s:.0f}s: is it running? "
                        f"{what} goes on from here when run again"
                    )
                time.sleep(0.5)
    except psycopg.OperationalError as exc:
        raise TransientError(f"source unreachable: {exc}") from exc
    return False


class Positions:
    """Offsets of one view's topics, its live groups' commits and the
    connector's progress; ``stopping`` ends the waits early."""

    def __init__(self, cfg: Config, view: str, stopping: Callable[[], bool]) -> None:
        self.cfg = cfg
        self.view = view
        self.stopping = stopping

    @cached_property
    def _admin(self) -> AdminClient:
        return kafkaclient.admin(self.cfg.kafka)

    def live_groups(self, serving: bool = False) -> list[str]:
        """The consumer groups of the live workers that apply this view
        (:mod:`pipeline.groups`: one per scope of views and sinks); with
        ``serving``, only those that have a member now. A group with none
        (its workers stopped, or never started) has no batch in flight: a
        worker that joins it later opens the stores after the switch, so it
        writes the new generation.

        Raises:
            TransientError: the brokers did not answer (the run waits the
                outage out and goes on from its last recorded step; the
                admin client's timeout had ended a rebuild's drop with a
                traceback while Kafka was down).
        """
        try:
            groups = config_groups(self._admin, self.cfg, 10, serving)
        except (KafkaException, TimeoutError) as exc:
            raise TransientError(
                f"kafka: the consumer groups were not listed: {exc!r}"
            ) from exc
        return sorted(g for g, scope in groups.items() if self.view in scope.views)

    def wait_live_commits(self) -> None:
        """Wait until every live group with a member committed its partitions
        up to their ends now: a batch consumed before the switch is then
        written, so no live write still goes to the old generation (a MongoDB
        write that resolved it would create its collection again after the
        drop). With every worker stopped there is nothing to wait for (a
        rebuild run with them stopped waited its whole minute)."""
        ends = self.offsets(high=True)
        deadline = time.monotonic() + DRAIN_MAX_S
        while not self.stopping() and time.monotonic() < deadline:
            behind = {
                (group, k)
                for group in self.live_groups(serving=True)
                for k, o in self.committed(group, dict.fromkeys(ends, -1)).items()
                # (a partition the group never committed: nobody reads it)
                if 0 <= o < ends[part_key(*k)]
            }
            if not behind:
                return
            time.sleep(0.5)
        logger.warning(
            "rebuild drops view=%s while live workers have not committed up to "
            "the switch (are they running?)",
            self.view,
        )

    def wait_connector(self, timeout_s: float = 600.0) -> None:
        """Wait until the connector produced every change committed so far
        (:func:`wait_stream`)."""
        wait_stream(self.cfg, self.stopping, timeout_s, "The rebuild")

    def topics(self) -> list[str]:
        return sorted(t for t, vs in self.cfg.view_topics().items() if self.view in vs)

    def consumer(self, group: str) -> Consumer:
        return kafkaclient.consumer(
            self.cfg.kafka, {"group.id": group, "enable.auto.commit": False}
        )

    def offsets(self, high: bool) -> Offsets:
        """Every partition of the view's topics at its end (or beginning)."""
        consumer = self.consumer(f"{self.cfg.kafka.group_id}.rebuild-probe")
        out: Offsets = {}
        try:
            for topic in self.topics():
                md = consumer.list_topics(topic, timeout=10).topics.get(topic)
                if md is None or md.error is not None:
                    raise FatalError(
                        f"topic {topic} of view {self.view} does not exist "
                        "(is the connector applied?)"
                    )
                for part in md.partitions:
                    low, hi = consumer.get_watermark_offsets(
                        TopicPartition(topic, part), timeout=10
                    )
                    out[part_key(topic, part)] = hi if high else low
        finally:
            consumer.close()
        return out

    def committed(self, group: str, first: Offsets) -> dict[tuple[str, int], int]:
        """Where the catch-up goes on: its group's commits, else ``first``."""
        consumer = self.consumer(group)
        try:
            parts = [TopicPartition(*part_of(k)) for k in first]
            out = {part_of(k): v for k, v in first.items()}
            for tp in consumer.committed(parts, timeout=10):
                if tp.offset >= 0:
                    out[(tp.topic, tp.partition)] = tp.offset
            return out
        finally:
            consumer.close()
