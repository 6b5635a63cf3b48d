"""Decode Debezium records (Kafka Connect JSON with schemas) into change events.

The connector writes each record as ``{"schema": ..., "payload": ...}`` with
``org.apache.kafka.connect.json.JsonConverter`` and ``schemas.enable=true``.
This is the worker's hot path, so:

* the bytes are parsed once, and when the record starts with a schema seen
  before on its topic (a prefix comparison), only the payload is parsed;
* each distinct schema is turned once into converters (see
  :mod:`pipeline.types`) and cached by the schema's exact text.

Values are mapped by :mod:`pipeline.types`, the mapping every view kind
shares. An unchanged TOASTed column becomes :data:`~pipeline.events.UNCHANGED`
unless the ``before`` image (REPLICA IDENTITY FULL) holds its value.

A record that cannot be decoded raises ``BadRecord("decode", ...)``; nothing
else escapes for bad input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pipeline.errors import BadRecord
from pipeline.events import UNCHANGED, ChangeEvent, Document, Op, Position
from pipeline.types import (
    FieldError,
    RowConverter,
    SchemaError,
    struct_converter,
)

#: Debezium writes heartbeats to ``__debezium-heartbeat.{topic.prefix}``.
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat."
HEARTBEAT_SCHEMA = "io.debezium.connector.common.Heartbeat"

_OPS = {op.value: op for op in Op if op is not Op.TOMBSTONE}
_NOT_SNAPSHOT = (None, False, "false")
_HEAD = '{"schema":'
_SEP = ',"payload":'
_RECENT_PER_TOPIC = 4
_MAX_CACHED_SCHEMAS = 1024
_raw_decode = json.JSONDecoder().raw_decode

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class _Envelope:
    """Converters of one value schema."""

    before: RowConverter | None
    after: RowConverter | None
    heartbeat: bool


_FAIL: Any = object()


@dataclass(frozen=True, slots=True)
class _Seen(Generic[T]):
    """A schema seen on a topic: the record's text up to its payload."""

    prefix: str
    compiled: T


class _SchemaCache(Generic[T]):
    """Parses envelopes and caches what ``build`` makes of each schema."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self._build = build
        self._by_text: dict[str, T] = {}
        self._recent: dict[str, list[_Seen[T]]] = {}

    def parse(self, topic: str, raw: bytes | str, what: str) -> tuple[Any, T]:
        """Return the payload and the compiled schema of one envelope."""
        try:
            text = raw if isinstance(raw, str) else raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadRecord("decode", f"{what} is not UTF-8 text: {exc}") from exc
        for seen in self._recent.get(topic, ()):
            if text.startswith(seen.prefix):
                payload = _payload_at(text, len(seen.prefix))
                if payload is not _FAIL:
                    return payload, seen.compiled
                break
        return self._parse_slow(topic, text, what)

    def _parse_slow(self, topic: str, text: str, what: str) -> tuple[Any, T]:
        if text.startswith(_HEAD):
            try:
                schema, end = _raw_decode(text, len(_HEAD))
            except (ValueError, RecursionError):
                schema, end = _FAIL, 0
            if schema is not _FAIL and text.startswith(_SEP, end):
                start = end + len(_SEP)
                payload = _payload_at(text, start)
                if payload is not _FAIL:
                    compiled = self._compile(text[len(_HEAD) : end], schema, what)
                    recent = self._recent.setdefault(topic, [])
                    recent.insert(0, _Seen(text[:start], compiled))
                    del recent[_RECENT_PER_TOPIC:]
                    return payload, compiled
        # Any other layout (pretty-printed, keys reordered): parse it whole.
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadRecord("decode", f"{what} is not valid JSON: {exc}") from exc
        if not isinstance(obj, dict) or "schema" not in obj or "payload" not in obj:
            raise BadRecord(
                "decode",
                f"{what} is not a Kafka Connect JSON envelope with schema and "
                "payload (JsonConverter with schemas.enable=true)",
            )
        schema = obj["schema"]
        fingerprint = json.dumps(schema, sort_keys=True, separators=(",", ":"))
        return obj["payload"], self._compile(fingerprint, schema, what)

    def _compile(self, fingerprint: str, schema: Any, what: str) -> T:
        compiled = self._by_text.get(fingerprint, _FAIL)
        if compiled is _FAIL:
            try:
                compiled = self._build(schema)
            except (SchemaError, ValueError, TypeError) as exc:
                raise BadRecord("decode", f"{what} schema: {exc}") from exc
            if len(self._by_text) >= _MAX_CACHED_SCHEMAS:
                self._by_text.clear()
            self._by_text[fingerprint] = compiled
        return compiled  # type: ignore[no-any-return]  # _FAIL sentinel is Any


def _payload_at(text: str, start: int) -> Any:
    try:
        payload, end = _raw_decode(text, start)
    except (ValueError, RecursionError):
        return _FAIL
    if text[end:].strip() != "}":
        return _FAIL
    return payload


def _key_schema(schema: Any) -> RowConverter | None:
    if isinstance(schema, dict) and schema.get("type") == "struct":
        return struct_converter(schema)
    return None


def _envelope_schema(schema: Any) -> _Envelope:
    if not isinstance(schema, dict):
        raise SchemaError("the value has no schema (enable schemas in JsonConverter)")
    if schema.get("name") == HEARTBEAT_SCHEMA:
        return _Envelope(None, None, heartbeat=True)
    fields = schema.get("fields")
    if not isinstance(fields, list):
        raise SchemaError("the value schema is not a struct")
    rows: dict[str, RowConverter] = {}
    for f in fields:
        if isinstance(f, dict) and f.get("field") in ("before", "after"):
            rows[f["field"]] = struct_converter(f)
    return _Envelope(rows.get("before"), rows.get("after"), heartbeat=False)


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
    try:
        last_commit, lsn = json.loads(text)
        return (int(last_commit), int(lsn))
    except (ValueError, TypeError):
        return None


def _merge_before(after: Document, before: Document) -> None:
    """Fill unchanged TOASTed columns of ``after`` from a full ``before`` image."""
    for name, value in after.items():
        if value is UNCHANGED:
            old = before.get(name)
            if old is not None and old is not UNCHANGED:
                after[name] = old


def table_of_topic(topic: str) -> str:
    """``schema.table`` from a ``{prefix}.{schema}.{table}`` topic name.

    Raises:
        BadRecord: the topic name has fewer than three dot-separated parts.
    """
    parts = topic.rsplit(".", 2)
    if len(parts) < 3 or not all(parts):
        raise BadRecord("decode", f"topic {topic!r} is not named prefix.schema.table")
    return f"{parts[1]}.{parts[2]}"


class JsonDecoder:
    """Decodes Debezium JSON records; caches converters per schema.

    Not thread-safe for concurrent use of one instance (the caches are plain
    dicts); give each thread its own decoder.
    """

    def __init__(self) -> None:
        self._keys: _SchemaCache[RowConverter | None] = _SchemaCache(_key_schema)
        self._values: _SchemaCache[_Envelope] = _SchemaCache(_envelope_schema)

    def decode(self, msg: RawMessage) -> ChangeEvent | Heartbeat:
        """Decode one consumed record.

        Args:
            msg: a record whose ``error()`` is ``None``.

        Returns:
            A :class:`ChangeEvent` (create, update, delete, snapshot read,
            truncate or tombstone) or a :class:`Heartbeat`.

        Raises:
            BadRecord: reason ``decode``; the record cannot be decoded.
            ValueError: ``msg`` is a Kafka error event, not a record.
        """
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
            payload, _ = self._values.parse(topic, raw, "value")
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
        payload, envelope = self._values.parse(topic, raw, "value")
        if envelope.heartbeat:
            return _heartbeat(payload, key, position)
        return _change(payload, envelope, key, position)

    def _key(self, topic: str, raw: bytes | str | None) -> dict[str, Any]:
        if raw is None:
            return {}
        payload, convert = self._keys.parse(topic, raw, "key")
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


def _change(
    payload: Any, envelope: _Envelope, key: dict[str, Any], position: Position
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
    snapshot = op is Op.READ or source.get("snapshot") not in _NOT_SNAPSHOT
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


_DEFAULT = JsonDecoder()


def decode(msg: RawMessage) -> ChangeEvent | Heartbeat:
    """Decode one record with the process-wide :class:`JsonDecoder`.

    See :meth:`JsonDecoder.decode`.
    """
    return _DEFAULT.decode(msg)
