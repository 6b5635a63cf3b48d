"""Decode Debezium records into change events: the names older code imports.

The decoders live in :mod:`pipeline.source` (one
:class:`~pipeline.source.records.Converter` per ``kafka.format``); this
module keeps :func:`decode`, a process-wide JSON decoder, and re-exports
what callers import from here.
"""

from __future__ import annotations

from pipeline.events import ChangeEvent
from pipeline.source.json_converter import JsonConverter
from pipeline.source.records import (
    HEARTBEAT_SCHEMA,
    HEARTBEAT_TOPIC_PREFIX,
    Converter,
    FakeMessage,
    Heartbeat,
    RawMessage,
    table_of_topic,
)

#: The JSON converter under its former name.
JsonDecoder = JsonConverter

__all__ = [
    "HEARTBEAT_SCHEMA",
    "HEARTBEAT_TOPIC_PREFIX",
    "Converter",
    "FakeMessage",
    "Heartbeat",
    "JsonConverter",
    "JsonDecoder",
    "RawMessage",
    "decode",
    "table_of_topic",
]

_DEFAULT = JsonConverter()


def decode(msg: RawMessage) -> ChangeEvent | Heartbeat:
    """Decode one record with the process-wide :class:`JsonConverter`.

    See :meth:`JsonConverter.decode`.
    """
    return _DEFAULT.decode(msg)
