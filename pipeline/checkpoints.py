"""Checkpoints: how far each view is applied in each sink, kept in Kafka.

One compacted topic holds the newest checkpoint per ``(view, sink, topic,
partition)``: the committed offset, the last applied source LSN and commit
time, and when it was applied. Kafka's committed offsets remain the resume
point; checkpoints are what ``readside status`` and the freshness figures
read, after any restart.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from confluent_kafka import (
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # re-exported at runtime, missing from the stubs' __all__

from pipeline import kafkaclient
from pipeline.errors import TransientError
from pipeline.sourceconfig import KafkaConfig


@dataclass(frozen=True)
class Checkpoint:
    view: str
    sink: str
    topic: str
    partition: int
    offset: int  # next offset to read (as committed)
    lsn: int | None
    commit_ts_ms: int | None
    applied_ts_ms: int
    epoch: int = 0

    @property
    def key(self) -> str:
        return f"{self.view}|{self.sink}|{self.topic}|{self.partition}"


@dataclass(frozen=True)
class SourceMark:
    """The newest source position the worker saw (from heartbeats and events)."""

    lsn: int | None
    ts_ms: int | None
    seen_ts_ms: int


def ensure_topics(
    admin: AdminClient,
    names: Iterable[tuple[str, int, bool]],
    replication: int = 1,
    configs: Mapping[str, Mapping[str, str]] | None = None,
) -> None:
    """Create topics that do not exist: ``(name, partitions, compacted)``.

    ``configs`` adds topic settings by name (e.g. ``retention.ms``), used
    only when a topic is created; an existing topic is left as it is.
    """
    existing = set(admin.list_topics(timeout=10).topics)
    configs = configs or {}
    new = [
        NewTopic(
            name,
            num_partitions=parts,
            replication_factor=replication,
            config={
                **({"cleanup.policy": "compact"} if compact else {}),
                **configs.get(name, {}),
            },
        )
        for name, parts, compact in names
        if name not in existing
    ]
    if not new:
        return
    for _name, fut in admin.create_topics(new).items():
        try:
            fut.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc.args[0].name()):
                raise


class CheckpointWriter:
    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer = producer
        self.topic = topic

    def write(self, checkpoints: Iterable[Checkpoint]) -> None:
        for cp in checkpoints:
            self.producer.produce(
                self.topic, key=cp.key.encode(), value=json.dumps(asdict(cp)).encode()
            )
        self.producer.poll(0)

    def unloaded(
        self, view: str, sink: str, since_ms: int, why: str, load: str
    ) -> None:
        """Record that ``sink`` does not hold ``view`` whole, why, and the
        command that loads it (:mod:`pipeline.loaded`)."""
        value = {"view": view, "sink": sink, "since_ms": since_ms}
        value |= {"why": why, "load": load}
        self.producer.produce(
            self.topic, key=unloaded_key(view, sink), value=json.dumps(value).encode()
        )
        self.producer.poll(0)

    def whole(self, view: str, sink: str) -> None:
        """Remove the record of :meth:`unloaded` (a tombstone)."""
        self.producer.produce(self.topic, key=unloaded_key(view, sink), value=None)
        self.producer.poll(0)

    def definition(self, view: str, sink: str, definition: dict[str, str]) -> None:
        """Record the definition ``sink``'s documents of ``view`` were last
        written whole by (:mod:`pipeline.definitions`)."""
        value = {"view": view, "sink": sink, "definition": definition}
        self.producer.produce(
            self.topic, key=definition_key(view, sink), value=json.dumps(value).encode()
        )
        self.producer.poll(0)

    def mark_source(self, mark: SourceMark) -> None:
        self.producer.produce(
            self.topic, key=b"__source__", value=json.dumps(asdict(mark)).encode()
        )
        self.producer.poll(0)


class Unloaded(NamedTuple):
    """A view a sink does not hold whole: since when (ms), why, and the
    command that loads it (None: recorded by a worker that did not say)."""

    since_ms: int
    why: str | None = None
    load: str | None = None


class Recorded(NamedTuple):
    """What the workers recorded on the topic, as of one read."""

    #: the newest checkpoint of every key
    checkpoints: dict[str, Checkpoint]
    #: the newest source mark
    mark: SourceMark | None
    #: (view, sink) -> since when the sink does not hold the view whole, why
    unloaded: dict[tuple[str, str], Unloaded]
    #: (view, sink) -> the definition the sink's documents were last written
    #: whole by
    definitions: dict[tuple[str, str], dict[str, str]]


def read_recorded(
    kafka: KafkaConfig, topic: str, timeout_s: float = 10.0, whole: bool = False
) -> Recorded:
    """The checkpoints, source mark, unloaded views and definitions on the
    topic (``whole``: see :func:`read_records`)."""
    out = Recorded({}, None, {}, {})
    for key, data in read_records(kafka, topic, timeout_s, whole).items():
        if key == "__source__":
            out = out._replace(mark=SourceMark(**data))
        elif key.startswith(UNLOADED_PREFIX):
            out.unloaded[(data["view"], data["sink"])] = Unloaded(
                int(data["since_ms"]), data.get("why"), data.get("load")
            )
        elif key.startswith(DEFINITION_PREFIX):
            out.definitions[(data["view"], data["sink"])] = dict(data["definition"])
        elif not key.startswith(RECORD_PREFIX):
            cp = Checkpoint(**data)
            out.checkpoints[cp.key] = cp
    return out


def read(
    kafka: KafkaConfig, topic: str, timeout_s: float = 10.0
) -> tuple[dict[str, Checkpoint], SourceMark | None]:
    """The newest checkpoint of every key, and the newest source mark."""
    found = read_recorded(kafka, topic, timeout_s)
    return found.checkpoints, found.mark


#: Keys of the records beside checkpoints on the topic (``__source__``, the
#: topic layouts and view epochs of :mod:`pipeline.layout`) start with this.
RECORD_PREFIX = "__"
#: Keys of the records of views a sink does not hold whole (pipeline.loaded).
UNLOADED_PREFIX = "__unloaded__|"


#: Keys of the records of the definitions views' documents follow
#: (pipeline.definitions).
DEFINITION_PREFIX = "__definition__|"


def unloaded_key(view: str, sink: str) -> bytes:
    return f"{UNLOADED_PREFIX}{view}|{sink}".encode()


def definition_key(view: str, sink: str) -> bytes:
    return f"{DEFINITION_PREFIX}{view}|{sink}".encode()


def read_records(
    kafka: KafkaConfig, topic: str, timeout_s: float = 10.0, whole: bool = False
) -> dict[str, dict[str, Any]]:
    """The newest value of every key of the topic, as JSON (deleted keys left out).

    Raises:
        TransientError: with ``whole``, the topic could not be read to its end
            within ``timeout_s`` (without it, what was read comes back).
    """
    consumer = kafkaclient.consumer(
        kafka, {"group.id": "readside-status", "enable.auto.commit": False}
    )
    out: dict[str, dict[str, Any]] = {}
    ends: dict[int, int] = {}
    try:
        try:
            md = consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if md is None:
                return out
            if md.error is not None:
                # A topic that exists but cannot be read yet (no leader, as
                # right after a broker restart) is not an empty topic.
                if whole and md.error.code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise TransientError(f"topic {topic} not readable: {md.error}")
                return out
            tps = []
            for p in md.partitions:
                low, high = consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=timeout_s
                )
                if high > low:
                    ends[p] = high
                    tps.append(TopicPartition(topic, p, low))
        except KafkaException as exc:
            raise TransientError(f"topic {topic} not readable: {exc}") from exc
        consumer.assign(tps)
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            part, offset, key = msg.partition(), msg.offset(), msg.key()
            if part is None or offset is None or key is None:
                continue
            if offset + 1 >= ends.get(part, 0):
                ends.pop(part, None)
            value = msg.value()
            if value is None:
                out.pop(key.decode(), None)
            else:
                out[key.decode()] = json.loads(value)
    finally:
        consumer.close()
    if whole and ends:
        raise TransientError(
            f"topic {topic} not read to its end within {timeout_s:.0f}s"
        )
    return out
