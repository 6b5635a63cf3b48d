"""Progress of snapshot loads, kept in a compacted Kafka topic.

One record per run (view, sinks, extra condition): how many rows are done, the
key after which the next chunk starts, and whether the run is still going.
One record per focus (key ``focus:NAME``, method ``focus``) holds the
definition ``readside focus apply`` last applied, so the next apply knows
what to backfill (records of the same shape, so older readers still parse
them). A
run that was killed resumes from the last finished chunk when it is started
again with the same arguments; ``readside status`` lists the runs.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Producer, TopicPartition

from pipeline import kafkaclient
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config
from pipeline.errors import TransientError


def now_ms() -> int:
    return int(time.time() * 1000)


def run_id(view: str, sinks: list[str], where: str | None) -> str:
    text = json.dumps([view, sorted(sinks), where or ""])
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def rebuild_key(view: str, sinks: list[str]) -> str:
    """Key of the record of a ``readside snapshot VIEW --rebuild`` run."""
    return f"rebuild:{run_id(view, sinks, None)}"


def focus_key(name: str) -> str:
    """Key of the record of what ``readside focus apply NAME`` last applied."""
    return f"focus:{name}"


@dataclass
class SnapshotState:
    """One snapshot run and how far it got."""

    view: str
    sinks: list[str]
    where: str | None
    #: chunks | replay | signal | rebuild, or purge (a focus apply's deletes) and
    #: focus (the record of an applied focus: ``where`` is its definition)
    method: str
    state: str = "running"  # running | done | failed | signalled | applied
    rows: int = 0
    total: int | None = None
    after: list[str] | None = None  # key of the last row of the last chunk
    chunks: int = 0
    started_ms: int = field(default_factory=now_ms)
    updated_ms: int = field(default_factory=now_ms)
    error: str | None = None
    #: documents the stores rejected, sent to the dead-letter topic
    dead_letters: int = 0
    #: rebuilds (method ``rebuild``): the step reached (fill, catch-up,
    #: switched, drop, done), the generation being built, each sink's live
    #: generation before, where the catch-up starts ("topic:partition" ->
    #: offset), the end offsets sampled right after the switch, and the rows
    #: of each finished step
    phase: str | None = None
    generation: int | None = None
    previous: dict[str, int] | None = None
    offsets: dict[str, int] | None = None
    switch_ends: dict[str, int] | None = None
    counts: dict[str, int] | None = None
    #: rebuilds: events of rows gone from the source that the catch-up
    #: skipped, recorded before it waits to go on to their deletes (so that a
    #: run resumed after an outage goes on too)
    gone: int = 0

    @property
    def id(self) -> str:
        return run_id(self.view, self.sinks, self.where)

    def rate(self) -> float:
        seconds = max(0.001, (self.updated_ms - self.started_ms) / 1000)
        return self.rows / seconds


class SnapshotLog:
    """Writes and reads snapshot states on ``kafka.snapshot_topic``."""

    def __init__(self, cfg: Config) -> None:
        self.kafka = cfg.kafka
        self.topic = cfg.kafka.snapshot_topic
        self._producer: Producer | None = None
        admin = kafkaclient.admin(self.kafka)
        ensure_topics(admin, [(self.topic, 1, True)], cfg.kafka.replication_factor)

    def save(self, st: SnapshotState, key: str | None = None) -> None:
        """Record ``st`` durably (waits for the broker's acknowledgement).

        ``key`` defaults to the run's id; :func:`focus_key` keys the record
        of a focus's applied definition (method ``focus``).
        """
        if self._producer is None:
            self._producer = kafkaclient.producer(self.kafka)
        st.updated_ms = now_ms()
        self._producer.produce(
            self.topic,
            key=(key or st.id).encode(),
            value=json.dumps(asdict(st)).encode(),
        )
        if self._producer.flush(30) != 0:
            raise TransientError("snapshot progress not acknowledged by Kafka in 30s")

    def read(self, timeout_s: float = 10.0) -> dict[str, SnapshotState]:
        """The newest record of every key: runs by id, focuses by
        :func:`focus_key`.

        Raises:
            TransientError: the log could not be read to its end within
                ``timeout_s`` (a broker restarting): a partial read would
                make a killed run start over, or a focus forget what it
                applied.
        """
        consumer = kafkaclient.consumer(
            self.kafka,
            {"group.id": "readside-snapshot-log", "enable.auto.commit": False},
        )
        out: dict[str, SnapshotState] = {}
        try:
            try:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(self.topic, 0), timeout=timeout_s
                )
            except KafkaException as exc:
                raise TransientError(f"topic {self.topic} not readable: {exc}") from exc
            if high <= low:
                return out
            consumer.assign([TopicPartition(self.topic, 0, low)])
            deadline = time.monotonic() + timeout_s
            while True:
                if time.monotonic() >= deadline:
                    raise TransientError(
                        f"topic {self.topic} not read to its end ({high}) "
                        f"within {timeout_s:.0f}s"
                    )
                msg = consumer.poll(0.5)
                if msg is None or msg.error():
                    continue
                value: bytes | None = msg.value()
                if value is not None:
                    data: dict[str, Any] = json.loads(value)
                    st = SnapshotState(**data)
                    raw_key: bytes | None = msg.key()
                    out[raw_key.decode() if raw_key else st.id] = st
                if (msg.offset() or 0) + 1 >= high:
                    return out
        finally:
            consumer.close()

    def focus(self, name: str) -> SnapshotState | None:
        """The definition last applied for focus ``name`` (None: never)."""
        return self.read().get(focus_key(name))

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)
