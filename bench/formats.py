"""The record formats of ``python -m bench``: records, decoder, bare parse.

Each format has its own topic prefix (its own topics, groups and targets)
and the same changes (:func:`bench.events.payloads`):

* ``json``: Kafka Connect's JsonConverter with schemas
  (:func:`bench.events.records`), decoded by readside's ``JsonConverter``;
  the bare parse is ``orjson.loads`` of the whole value when orjson is
  installed (it is no dependency of readside), else ``json.loads``, and of
  the payload alone: the converter parses only that once it has seen the
  schema text before it (most of the value's bytes);
* ``avro``: Apicurio's AvroConverter in the Confluent wire format
  (:mod:`bench.avro_events`), the schemas registered in the stack's
  registry, decoded by readside's ``AvroConverter`` reading them from it;
  the bare parse is ``fastavro.schemaless_reader`` of the value's datum
  with its parsed writer schema.

The decode and bare-parse rates run over pre-built in-memory messages, after
one warm-up record (for Avro, the one that fetches the schemas: the
converter caches them, so the measurement is of decoding).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro

from bench import avro_events, events
from bench.scenario import plain
from pipeline.config import Config
from pipeline.decode import FakeMessage, JsonDecoder
from pipeline.source.avro_converter import AvroConverter
from pipeline.source.avro_schema import reader_schema
from pipeline.source.records import Converter
from pipeline.source.registry import SchemaRegistry
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import keycloak, runner

FORMATS = ("json", "avro")
Records = list[tuple[bytes, bytes]]


def _json_bare() -> tuple[str, Callable[[bytes], Any]]:
    try:
        import orjson
    except ImportError:
        return "json.loads (orjson not installed)", json.loads
    return "orjson.loads", orjson.loads


@dataclass
class Format:
    """One record format of a bench run."""

    name: str
    prefix: str
    records: Records
    #: a new readside converter of these records
    converter: Callable[[], Converter]
    bare_label: str
    #: parses one value alone, as fast as the format allows: the ceiling
    bare: Callable[[bytes], Any]
    #: the worker config's ``kafka`` settings of this format
    kafka: dict[str, Any] = field(default_factory=dict)
    registry_url: str | None = None
    #: who registered the schemas (and deletes them after)
    writer: avro_events.Login = None

    @property
    def topic(self) -> str:
        return f"{self.prefix}.{events.TABLE}"


def build(
    name: str,
    prefix: str,
    count: int,
    kafka: KafkaConfig,
    writer: avro_events.Login = None,
) -> Format:
    """The records of ``name`` under ``prefix``; Avro's schemas registered in
    ``kafka``'s registry as ``writer``, and read back with ``kafka``'s login."""
    registry_url = kafka.schema_registry_url
    topic = f"{prefix}.{events.TABLE}"
    if name == "json":
        label, bare = _json_bare()
        return Format(
            name, prefix, list(events.records(prefix, count)), JsonDecoder, label, bare
        )
    schemas = avro_events.AvroSchemas.of(prefix)
    key_id, value_id = avro_events.register(registry_url, topic, schemas, writer)
    parsed = fastavro.parse_schema(reader_schema(schemas.value))

    def bare_avro(value: bytes) -> Any:
        stream = io.BytesIO(value)
        stream.seek(5)  # magic byte and schema id
        return fastavro.schemaless_reader(stream, parsed, None)

    return Format(
        name,
        prefix,
        list(avro_events.records(prefix, count, key_id, value_id)),
        lambda: AvroConverter(SchemaRegistry.of(kafka)),
        "fastavro.schemaless_reader",
        bare_avro,
        avro_settings(kafka),
        registry_url,
        writer,
    )


def avro_settings(kafka: KafkaConfig) -> dict[str, Any]:
    """The ``kafka`` settings of a config whose records are Avro, in
    ``kafka``'s registry, read with its login (secrets revealed)."""
    registry = {
        k: v for k, v in plain(kafka).items() if k.startswith("schema_registry")
    }
    return {"format": "avro", **registry}


def registry_writer(base: Config) -> avro_events.Login:
    """The login the bench registers its schemas with: the local stack's
    connector client (the worker's may only read); ``None`` where the stack
    keeps none."""
    return keycloak.client_login(runner.data_dir(base.stack), keycloak.CONNECT_CLIENT)


def unregister(fmt: Format) -> None:
    if fmt.registry_url is not None:
        avro_events.unregister(fmt.registry_url, fmt.topic, fmt.writer)


def messages(fmt: Format) -> list[FakeMessage]:
    return [
        FakeMessage(fmt.topic, v, k, n % 3, n // 3)
        for n, (k, v) in enumerate(fmt.records)
    ]


def _rate(count: int, size: int, elapsed: float) -> dict[str, Any]:
    return {
        "events": count,
        "elapsed_s": elapsed,
        "events_per_s": count / elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "avg_value_bytes": size / count,
    }


def measure_decode(fmt: Format) -> dict[str, Any]:
    """readside's converter over every record (key and value)."""
    msgs = messages(fmt)
    converter = fmt.converter()
    converter.decode(msgs[0])  # warm-up: Avro fetches its schemas here
    start = time.perf_counter()
    for m in msgs:
        converter.decode(m)
    elapsed = time.perf_counter() - start
    return _rate(len(msgs), sum(len(v) for _k, v in fmt.records), elapsed)


def _bare_rate(parse: Callable[[bytes], Any], values: list[bytes]) -> dict[str, Any]:
    parse(values[0])
    start = time.perf_counter()
    for v in values:
        parse(v)
    elapsed = time.perf_counter() - start
    return _rate(len(values), sum(map(len, values)), elapsed)


def _payload(value: bytes) -> bytes:
    """The payload text of a JSON record (the schema comes first)."""
    start = value.index(b',"payload":') + len(b',"payload":')
    return value[start : value.rindex(b"}")]


def measure_bare(fmt: Format) -> list[dict[str, Any]]:
    """The format's fastest parse of each value alone, nothing made of it
    (for JSON, of the payload alone too)."""
    values = [v for _k, v in fmt.records]
    rows = [{**_bare_rate(fmt.bare, values), "how": fmt.bare_label}]
    if fmt.name == "json":
        payloads = [_payload(v) for v in values]
        how = f"{fmt.bare_label}, payload alone"
        rows.append({**_bare_rate(fmt.bare, payloads), "how": how})
    return rows


def avg_row_bytes(prefix: str, count: int = 500) -> float:
    """Bytes of a row (``after``) as compact JSON, over the first records."""
    rows = [p["after"] for _k, p in events.payloads(prefix, count)]
    return sum(len(json.dumps(r, separators=(",", ":"))) for r in rows) / len(rows)
