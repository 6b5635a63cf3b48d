"""What a converter reads and what it returns besides change events.

:class:`RawMessage` is the part of a consumed Kafka record a converter reads;
:class:`FakeMessage` builds one in memory; :class:`Heartbeat` is Debezium's
liveness record; :class:`Converter` is the interface every record format
implements.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.errors import BadRecord
from pipeline.events import ChangeEvent, Position

#: Debezium writes heartbeats to ``__debezium-heartbeat.{topic.prefix}``.
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat."
HEARTBEAT_SCHEMA = "io.debezium.connector.common.Heartbeat"


class RawMessage(Protocol):
    """The part of ``confluent_kafka.Message`` the decoder reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | str | None: ...
    def value(self) -> bytes | str | None: ...
    def headers(self) -> Any: ...
    def error(self) -> Any: ...
    def timestamp(self) -> tuple[int, int]: ...


@dataclass(frozen=True, slots=True)
class FakeMessage:
    """A Kafka message built in memory, for tests that need no broker."""

    msg_topic: str
    msg_value: bytes | None
    msg_key: bytes | None = None
    msg_partition: int = 0
    msg_offset: int = 0
    msg_headers: list[tuple[str, bytes | None]] | None = None
    msg_timestamp: tuple[int, int] = (0, 0)
    msg_error: Any = None

    @classmethod
    def of_json(
        cls, topic: str, key: Any, value: Any, *, partition: int = 0, offset: int = 0
    ) -> FakeMessage:
        """Encode ``key`` and ``value`` compactly, as JsonConverter writes them."""

        def enc(obj: Any) -> bytes | None:
            if obj is None:
                return None
            return json.dumps(obj, separators=(",", ":")).encode()

        return cls(topic, enc(value), enc(key), partition, offset)

    def topic(self) -> str:
        return self.msg_topic

    def partition(self) -> int:
        return self.msg_partition

    def offset(self) -> int:
        return self.msg_offset

    def key(self) -> bytes | None:
        return self.msg_key

    def value(self) -> bytes | None:
        return self.msg_value

    def headers(self) -> list[tuple[str, bytes | None]] | None:
        return self.msg_headers

    def error(self) -> Any:
        return self.msg_error

    def timestamp(self) -> tuple[int, int]:
        return self.msg_timestamp


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A Debezium heartbeat: the connector is alive and has read up to here.

    Attributes:
        ts_ms: when the connector emitted it (ms since epoch).
        position: where it sits in Kafka.
        lsn: the LSN it carries, when the record has one (Debezium's own
            heartbeat records usually carry only ``ts_ms``).
        server: the connector's topic prefix (``serverName`` of the key).
    """

    ts_ms: int
    position: Position
    lsn: int | None = None
    server: str | None = None


class Converter(Protocol):
    """Decodes the records of one format; one instance per thread."""

    def decode(self, msg: RawMessage) -> ChangeEvent | Heartbeat:
        """Decode one consumed record.

        Args:
            msg: a record whose ``error()`` is ``None``.

        Returns:
            A :class:`ChangeEvent` (create, update, delete, snapshot read,
            truncate or tombstone) or a :class:`Heartbeat`.

        Raises:
            BadRecord: reason ``decode``; the record cannot be decoded.
            TransientError: what decoding needs (a schema registry) is not
                reachable now; the same record may decode later.
            ValueError: ``msg`` is a Kafka error event, not a record.
        """
        ...

    def fetches(self, msg: RawMessage) -> bool:
        """Whether decoding ``msg`` would ask a service first (a schema
        registry, for a schema not fetched yet); decoding a record for which
        this is ``False`` reads nothing but the record and memory."""
        ...


def table_of_topic(topic: str) -> str:
    """``schema.table`` from a ``{prefix}.{schema}.{table}`` topic name.

    Raises:
        BadRecord: the topic name has fewer than three dot-separated parts.
    """
    parts = topic.rsplit(".", 2)
    if len(parts) < 3 or not all(parts):
        raise BadRecord("decode", f"topic {topic!r} is not named prefix.schema.table")
    return f"{parts[1]}.{parts[2]}"
