"""Debezium's envelope, in any record format, to a change event.

A converter parses a record's key and value into a payload and a Kafka
Connect schema (in the shape ``JsonConverter`` writes it); this module turns
the schema into converters once (:func:`envelope_schema`,
:func:`key_schema`) and maps each payload with them
(:class:`EnvelopeDecoder`). Values are mapped by :mod:`pipeline.types`, the
mapping every view kind shares. An unchanged TOASTed column becomes
:data:`~pipeline.events.UNCHANGED` unless the ``before`` image (REPLICA
IDENTITY FULL) holds its value.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import BadRecord
from pipeline.events import UNCHANGED, ChangeEvent, Document, Op, Position
from pipeline.source.records import (
    HEARTBEAT_SCHEMA,
    HEARTBEAT_TOPIC_PREFIX,
    Heartbeat,
    RawMessage,
    table_of_topic,
)
from pipeline.types import FieldError, RowConverter, SchemaError, struct_converter

_OPS = {op.value: op for op in Op if op is not Op.TOMBSTONE}
_NOT_SNAPSHOT = (None, False, "false")

#: Builds the converter of one struct schema (a row or a key).
StructBuilder = Callable[[Mapping[str, Any]], RowConverter]


@dataclass(frozen=True, slots=True)
class Envelope:
    """Converters of one value schema."""

    before: RowConverter | None
    after: RowConverter | None
    heartbeat: bool


def key_schema(
    schema: Any, struct: StructBuilder = struct_converter
) -> RowConverter | None:
    """The converter of a key schema; ``None`` when the key is no struct."""
    if isinstance(schema, dict) and schema.get("type") == "struct":
        return struct(schema)
    return None


def envelope_schema(schema: Any, struct: StructBuilder = struct_converter) -> Envelope:
    """The converters of a Debezium value schema (an envelope or a heartbeat).

    Raises:
        SchemaError: the schema is not a struct.
    """
    if not isinstance(schema, dict):
        raise SchemaError("the value has no schema (enable schemas in JsonConverter)")
    if schema.get("name") == HEARTBEAT_SCHEMA:
        return Envelope(None, None, heartbeat=True)
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise SchemaError("the value schema is not a struct")
    rows: dict[str, RowConverter] = {}
    for f in fields:
        if isinstance(f, dict) and f.get("field") in ("before", "after"):
            rows[f["field"]] = struct(f)
    return Envelope(rows.get("before"), rows.get("after"), heartbeat=False)


class EnvelopeDecoder(ABC):
    """The decoding every format shares: key, tombstone, heartbeat, change.

    A subclass parses the bytes of its format. Not thread-safe for concurrent
    use of one instance (the caches are plain dicts); give each thread its
    own decoder.
    """

    @abstractmethod
    def _parse_key(
        self, topic: str, raw: bytes | str
    ) -> tuple[Any, RowConverter | None]:
        """The key's payload and converter."""

    @abstractmethod
    def _parse_value(self, topic: str, raw: bytes | str) -> tuple[Any, Envelope]:
        """The value's payload and converters."""

    def fetches(self, msg: RawMessage) -> bool:
        """See :class:`.records.Converter`: nothing to fetch unless a
        subclass says so."""
        return False

    def decode(self, msg: RawMessage) -> ChangeEvent | Heartbeat:
        """Decode one consumed record (see :class:`.records.Converter`)."""
        if msg.error() is not None:
            raise ValueError(f"not a record but a Kafka error: {msg.error()!r}")
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            raise BadRecord("decode", "record without topic, partition or offset")
        position = Position(topic, partition, offset)
        key = self._key(topic, msg.key())
        raw = msg.value()
        if topic.startswith(HEARTBEAT_TOPIC_PREFIX):
            if raw is None:
                raise BadRecord("decode", "heartbeat record without a value")
            payload, _ = self._parse_value(topic, raw)
            return _heartbeat(payload, key, position)
        if raw is None:
            if not key:
                raise BadRecord("decode", "tombstone without a key")
            return ChangeEvent(
                table=table_of_topic(topic),
                op=Op.TOMBSTONE,
                key=key,
                before=None,
                after=None,
                lsn=None,
                commit_ts_ms=None,
                txid=None,
                position=position,
            )
        payload, envelope = self._parse_value(topic, raw)
        if envelope.heartbeat:
            return _heartbeat(payload, key, position)
        return _change(payload, envelope, key, position)

    def _key(self, topic: str, raw: bytes | str | None) -> dict[str, Any]:
        if raw is None:
            return {}
        payload, convert = self._parse_key(topic, raw)
        if payload is None:
            return {}
        if not isinstance(payload, dict):
            raise BadRecord("decode", f"key payload is not an object: {payload!r}")
        if convert is None:
            return payload
        try:
            return convert(payload)
        except FieldError as exc:
            raise BadRecord("decode", f"key {exc}") from exc


def _row(convert: RowConverter | None, value: Any) -> Document | None:
    if value is None:
        return None
    if convert is None:
        raise FieldError("<row>", TypeError("row value without a row schema"))
    return convert(value)


def _opt_int(source: dict[str, Any], name: str) -> int | None:
    value = source.get(name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise BadRecord("decode", f"source.{name} is not an integer: {value!r}")


def _stream_pos(source: dict[str, Any]) -> tuple[int, int] | None:
    """``source.sequence`` (``'["<last commit LSN>","<LSN>"]'``) as a pair of
    integers; None when it is absent or either half is unknown."""
    text = source.get("sequence")
    if not isinstance(text, str):
        return None
    # The usual form, split without a JSON parse (this runs for every change).
    halves = text[2:-2].split('","') if text[:2] == '["' and text[-2:] == '"]' else ()
    try:
        if len(halves) != 2:
            last_commit, lsn = json.loads(text)
            return (int(last_commit), int(lsn))
        return (int(halves[0]), int(halves[1]))
    except (ValueError, TypeError):
        return None


def _merge_before(after: Document, before: Document) -> None:
    """Fill unchanged TOASTed columns of ``after`` from a full ``before`` image."""
    for name, value in after.items():
        if value is UNCHANGED:
            old = before.get(name)
            if old is not None and old is not UNCHANGED:
                after[name] = old


def _change(
    payload: Any, envelope: Envelope, key: dict[str, Any], position: Position
) -> ChangeEvent:
    if not isinstance(payload, dict):
        raise BadRecord("decode", "value payload is not an object")
    source, code = payload.get("source"), payload.get("op")
    if not isinstance(source, dict) or not isinstance(code, str):
        raise BadRecord(
            "decode", "not a Debezium change event: the payload lacks op or source"
        )
    op = _OPS.get(code)
    if op is None:
        raise BadRecord("decode", f"unknown Debezium op {code!r}")
    schema, table = source.get("schema"), source.get("table")
    if not isinstance(schema, str) or not isinstance(table, str):
        raise BadRecord("decode", "source lacks schema or table")
    try:
        before = _row(envelope.before, payload.get("before"))
        after = _row(envelope.after, payload.get("after"))
    except FieldError as exc:
        raise BadRecord("decode", f"{schema}.{table}: {exc}") from exc
    if after is not None and before:
        _merge_before(after, before)
    kind = source.get("snapshot")
    snapshot = op is Op.READ or kind not in _NOT_SNAPSHOT
    return ChangeEvent(
        table=f"{schema}.{table}",
        op=op,
        key=key,
        before=before,
        after=after,
        lsn=_opt_int(source, "lsn"),
        commit_ts_ms=_opt_int(source, "ts_ms"),
        txid=_opt_int(source, "txId"),
        position=position,
        snapshot=snapshot,
        stream_pos=None if snapshot else _stream_pos(source),
        whole_read=snapshot and kind != "incremental",
    )


def _heartbeat(payload: Any, key: dict[str, Any], position: Position) -> Heartbeat:
    if not isinstance(payload, dict):
        raise BadRecord("decode", "heartbeat payload is not an object")
    ts_ms = _opt_int(payload, "ts_ms")
    if ts_ms is None:
        raise BadRecord("decode", "heartbeat without ts_ms")
    server = key.get("serverName")
    return Heartbeat(
        ts_ms=ts_ms,
        position=position,
        lsn=_opt_int(payload, "lsn"),
        server=server if isinstance(server, str) else None,
    )
