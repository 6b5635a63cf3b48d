"""Records of Apicurio Registry's ``AvroConverter`` (``kafka.format: avro``).

Each key and value is in the Confluent wire format: a zero magic byte, the
writer schema's id as 4 big-endian bytes (the registry's content id), then
the Avro binary datum. The connector is set up to write exactly that
(:func:`connectors.debezium.connector_config`): ``as-confluent``,
``use-id=contentId``, ids in the payload, not in headers.

Each schema id is fetched from the registry once
(:class:`~pipeline.source.registry.SchemaRegistry`) and compiled once: a
reader made for that schema (:mod:`pipeline.source.avro_reader`: native
where its C extension was built, else generated Python; fastavro's own
reader for the rare schema neither compiles) and the converters of
:mod:`pipeline.source.envelope`, built from the schema read back as a
Connect schema (:mod:`pipeline.source.avro_schema`), so that both formats
map every type alike.
"""

from __future__ import annotations

import io
import logging
import struct
from collections.abc import Callable
from typing import Any, TypeVar

import fastavro

from pipeline.errors import BadRecord
from pipeline.source.avro_reader import Reader, Unsupported, compile_reader
from pipeline.source.avro_schema import avro_struct, connect_schema, reader_schema
from pipeline.source.envelope import (
    Envelope,
    EnvelopeDecoder,
    envelope_schema,
    key_schema,
)
from pipeline.source.records import RawMessage
from pipeline.source.registry import SchemaRegistry
from pipeline.types import RowConverter, SchemaError

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAGIC = 0
_HEADER = 5
_READ_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    struct.error,
    RecursionError,  # the Python reader, on a recursive schema's deep datum
)


def head(raw: bytes | str, what: str) -> bytes:
    """The first bytes of a record in the Confluent wire format: the magic
    byte and the writer schema's id.

    Raises:
        BadRecord: the bytes do not start with the magic byte and an id.
    """
    if isinstance(raw, str) or len(raw) < _HEADER or raw[0] != MAGIC:
        raise BadRecord(
            "decode",
            f"{what} is not in the Confluent Avro wire format (magic byte 0, "
            "4-byte schema id); is the connector's converter Avro?",
        )
    return raw[:_HEADER]


def schema_id(raw: bytes | str, what: str) -> int:
    """The writer schema id of a record in the Confluent wire format.

    Raises:
        BadRecord: the bytes do not start with the magic byte and an id.
    """
    return int.from_bytes(head(raw, what)[1:], "big")


def _unfetched(raw: bytes | str | None, compiled: dict[bytes, Any]) -> bool:
    """Whether ``raw`` is in the wire format with a schema id not compiled
    yet (``compiled``: the compiled ids of its side, by first bytes)."""
    return (
        isinstance(raw, bytes)
        and raw[:_HEADER] not in compiled
        and len(raw) >= _HEADER
        and raw[0] == MAGIC
    )


class AvroConverter(EnvelopeDecoder):
    """Decodes Debezium Avro records; fetches and compiles each schema once.

    Not thread-safe for concurrent use of one instance (the caches are plain
    dicts); give each thread its own decoder.
    """

    def __init__(self, registry: SchemaRegistry) -> None:
        self.registry = registry
        #: the compiled schemas of each side, by the first bytes of their
        #: records (magic byte and id): a record finds its schema in one
        #: lookup of its first bytes
        self._keys: dict[bytes, tuple[Reader, RowConverter | None]] = {}
        self._values: dict[bytes, tuple[Reader, Envelope]] = {}

    def fetches(self, msg: RawMessage) -> bool:
        """Whether the key's or the value's schema id is one not fetched
        yet: its record is in the wire format, and its first bytes are not
        those of a compiled id (a record not in the wire format fetches
        nothing: it is a dead letter)."""
        return _unfetched(msg.key(), self._keys) or _unfetched(
            msg.value(), self._values
        )

    def _parse_key(
        self, topic: str, raw: bytes | str
    ) -> tuple[Any, RowConverter | None]:
        compiled = self._keys.get(raw[:_HEADER])  # type: ignore[arg-type]  # str: none
        if compiled is None:
            first = head(raw, "key")
            compiled = self._compile(first, "key", lambda s: key_schema(s, avro_struct))
            self._keys[first] = compiled
        return _read(raw, compiled[0], "key"), compiled[1]

    def _parse_value(self, topic: str, raw: bytes | str) -> tuple[Any, Envelope]:
        compiled = self._values.get(raw[:_HEADER])  # type: ignore[arg-type]  # str: none
        if compiled is None:
            first = head(raw, "value")
            compiled = self._compile(
                first, "value", lambda s: envelope_schema(s, avro_struct)
            )
            self._values[first] = compiled
        return _read(raw, compiled[0], "value"), compiled[1]

    def _compile(
        self, first: bytes, what: str, build: Callable[[dict[str, Any]], T]
    ) -> tuple[Reader, T]:
        """The reader and converters of the schema whose records start with
        ``first`` (see :func:`head`)."""
        sid = int.from_bytes(first[1:], "big")
        avro = self.registry.schema(sid)
        try:
            parsed = fastavro.parse_schema(
                reader_schema(avro), _ignore_default_error=True
            )
            return datum_reader(parsed, f"{what} schema id {sid}"), build(
                connect_schema(avro)
            )
        except (SchemaError, ValueError, TypeError, KeyError) as exc:
            raise BadRecord("decode", f"{what} schema id {sid}: {exc}") from exc


def datum_reader(parsed: Any, name: str) -> Reader:
    """The compiled reader of a parsed schema, or fastavro's reader of it
    when the schema does not compile (see :mod:`.avro_reader`)."""
    try:
        return compile_reader(parsed)
    except Unsupported as exc:
        logger.info("%s is read by fastavro's reader: %s", name, exc)

    def read(buf: bytes, pos: int) -> tuple[Any, int]:
        stream = io.BytesIO(buf)
        stream.seek(pos)
        return fastavro.schemaless_reader(stream, parsed, None), stream.tell()

    return read


def _read(raw: bytes | str, reader: Reader, what: str) -> Any:
    try:
        value, end = reader(raw, _HEADER)  # type: ignore[arg-type]  # bytes: checked
        if end > len(raw):
            raise EOFError(
                f"the datum needs {end - _HEADER} bytes, has {len(raw) - _HEADER}"
            )
    except _READ_ERRORS as exc:
        raise BadRecord("decode", f"{what} is not a valid Avro datum: {exc}") from exc
    return value
