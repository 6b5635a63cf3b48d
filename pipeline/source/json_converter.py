"""Records of Kafka Connect's ``JsonConverter`` with schemas (``kafka.format: json``).

The connector writes each record as ``{"schema": ..., "payload": ...}`` with
``schemas.enable=true``. This is the worker's hot path, so:

* the bytes are parsed once, and when the record starts with a schema seen
  before on its topic (a prefix comparison), only the payload is parsed
  (by orjson, in place);
* each distinct schema is turned once into converters (see
  :mod:`pipeline.source.envelope`) and cached by the schema's exact text.

A record that cannot be decoded raises ``BadRecord("decode", ...)``; nothing
else escapes for bad input.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pipeline.errors import BadRecord
from pipeline.source.envelope import (
    Envelope,
    EnvelopeDecoder,
    envelope_schema,
    key_schema,
)
from pipeline.types import RowConverter, SchemaError, loads_json

_HEAD = '{"schema":'
_SEP = ',"payload":'
_RECENT_PER_TOPIC = 4
_MAX_CACHED_SCHEMAS = 1024
_raw_decode = json.JSONDecoder().raw_decode

T = TypeVar("T")

_FAIL: Any = object()


@dataclass(frozen=True, slots=True)
class _Seen(Generic[T]):
    """A schema seen on a topic: the record's text up to its payload (and
    those bytes in UTF-8, to compare undecoded records with)."""

    prefix: str
    compiled: T
    prefix_bytes: bytes = b""


class _SchemaCache(Generic[T]):
    """Parses envelopes and caches what ``build`` makes of each schema."""

    def __init__(self, build: Callable[[Any], T]) -> None:
        self._build = build
        self._by_text: dict[str, T] = {}
        self._recent: dict[str, list[_Seen[T]]] = {}

    def parse(self, topic: str, raw: bytes | str, what: str) -> tuple[Any, T]:
        """Return the payload and the compiled schema of one envelope."""
        if isinstance(raw, bytes) and raw[-1:] == b"}":
            # The usual record: a known schema's bytes, then the payload and
            # the closing brace; only the payload is decoded and parsed.
            for seen in self._recent.get(topic, ()):
                if raw.startswith(seen.prefix_bytes):
                    try:
                        payload = loads_json(
                            memoryview(raw)[len(seen.prefix_bytes) : -1]
                        )
                        return payload, seen.compiled
                    except (ValueError, RecursionError):
                        break  # not that shape after all: the full path decides
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
                    prefix = text[:start]
                    recent.insert(0, _Seen(prefix, compiled, prefix.encode()))
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


class JsonConverter(EnvelopeDecoder):
    """Decodes Debezium JSON records; caches converters per schema.

    Not thread-safe for concurrent use of one instance (the caches are plain
    dicts); give each thread its own decoder.
    """

    def __init__(self) -> None:
        self._keys: _SchemaCache[RowConverter | None] = _SchemaCache(key_schema)
        self._values: _SchemaCache[Envelope] = _SchemaCache(envelope_schema)

    def _parse_key(
        self, topic: str, raw: bytes | str
    ) -> tuple[Any, RowConverter | None]:
        return self._keys.parse(topic, raw, "key")

    def _parse_value(self, topic: str, raw: bytes | str) -> tuple[Any, Envelope]:
        return self._values.parse(topic, raw, "value")
