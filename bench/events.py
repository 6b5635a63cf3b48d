"""Debezium-format change events for the benchmark, built as the connector does.

Each record is what Kafka Connect's ``JsonConverter`` (``schemas.enable=true``)
writes for the Debezium PostgreSQL connector configured by
:func:`connectors.debezium.connector_config`: a key ``{"schema", "payload"}``
with the primary key, and a value envelope with ``before``/``after`` row
structs (column types propagated as ``__debezium.source.column.*``
parameters), the ``source`` block, ``transaction``, ``op`` and timestamps —
the shape of ``tests/fixtures/debezium/captured``. Rows are a product
catalogue of about 0.7 KB each (the ``payload.after`` JSON).

Every event inserts a distinct row (a snapshot read or a create), so the worker
and the raw baseline write exactly the same documents into empty targets.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline import kafkaclient
from pipeline.sourceconfig import KafkaConfig

logger = logging.getLogger(__name__)

TABLE = "public.items"
_WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
    "mike november oscar papa quebec romeo sierra tango uniform victor"
).split()


def _col(
    kind: str,
    name: str,
    *,
    optional: bool = False,
    pg: str = "",
    semantic: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "optional": optional}
    if semantic:
        schema.update(name=semantic, version=1)
    if pg:
        params = {"__debezium.source.column.type": pg}
        params.update(
            {
                f"__debezium.source.column.{k}": str(v)
                for k, v in extra.pop("pg_params", {}).items()
            }
        )
        schema["parameters"] = params
    schema.update(extra)
    schema["field"] = name
    return schema


ROW_FIELDS: list[dict[str, Any]] = [
    _col("int64", "id", pg="INT8"),
    _col("string", "sku", pg="TEXT"),
    _col("string", "name", pg="TEXT"),
    _col("string", "price", pg="NUMERIC", pg_params={"length": 10, "scale": 2}),
    _col("array", "tags", pg="_TEXT", items={"type": "string", "optional": True}),
    _col("string", "attributes", pg="JSONB", semantic="io.debezium.data.Json"),
    _col("string", "description", optional=True, pg="TEXT"),
    _col("int32", "stock", pg="INT4"),
    _col("boolean", "active", pg="BOOL"),
    _col(
        "string",
        "created_at",
        pg="TIMESTAMPTZ",
        semantic="io.debezium.time.ZonedTimestamp",
    ),
    _col(
        "int64",
        "updated_at",
        optional=True,
        pg="TIMESTAMP",
        semantic="io.debezium.time.MicroTimestamp",
    ),
    _col(
        "int32",
        "available_from",
        optional=True,
        pg="DATE",
        semantic="io.debezium.time.Date",
    ),
    _col("string", "ref", pg="UUID", semantic="io.debezium.data.Uuid"),
]

_SOURCE_FIELDS = [
    _col("string", "version"),
    _col("string", "connector"),
    _col("string", "name"),
    _col("int64", "ts_ms"),
    _col(
        "string",
        "snapshot",
        optional=True,
        semantic="io.debezium.data.Enum",
        parameters={
            "allowed": "true,first,first_in_data_collection,"
            "last_in_data_collection,last,false,incremental"
        },
        default="false",
    ),
    _col("string", "db"),
    _col("string", "sequence", optional=True),
    _col("int64", "ts_us", optional=True),
    _col("int64", "ts_ns", optional=True),
    _col("string", "schema"),
    _col("string", "table"),
    _col("int64", "txId", optional=True),
    _col("int64", "lsn", optional=True),
    _col("int64", "xmin", optional=True),
    _col("string", "origin", optional=True),
    _col("int64", "origin_lsn", optional=True),
]


def _compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Envelopes:
    """Schema texts of one topic, rendered once (as the converter does)."""

    prefix: str

    def _row_struct(self, field: str) -> dict[str, Any]:
        return {
            "type": "struct",
            "fields": ROW_FIELDS,
            "optional": True,
            "name": f"{self.prefix}.{TABLE}.Value",
            "field": field,
        }

    @property
    def value_schema(self) -> str:
        return _compact(
            {
                "type": "struct",
                "fields": [
                    self._row_struct("before"),
                    self._row_struct("after"),
                    {
                        "type": "struct",
                        "fields": _SOURCE_FIELDS,
                        "optional": False,
                        "name": "io.debezium.connector.postgresql.Source",
                        "version": 1,
                        "field": "source",
                    },
                    {
                        "type": "struct",
                        "optional": True,
                        "name": "event.block",
                        "version": 1,
                        "field": "transaction",
                        "fields": [
                            _col("string", "id"),
                            _col("int64", "total_order"),
                            _col("int64", "data_collection_order"),
                        ],
                    },
                    _col("string", "op"),
                    _col("int64", "ts_ms", optional=True),
                    _col("int64", "ts_us", optional=True),
                    _col("int64", "ts_ns", optional=True),
                ],
                "optional": False,
                "name": f"{self.prefix}.{TABLE}.Envelope",
                "version": 2,
            }
        )

    @property
    def key_schema(self) -> str:
        return _compact(
            {
                "type": "struct",
                "optional": False,
                "name": f"{self.prefix}.{TABLE}.Key",
                "fields": [_col("int64", "id")],
            }
        )


def make_row(rng: random.Random, ident: int) -> dict[str, Any]:
    words = rng.choices(_WORDS, k=rng.randrange(40, 70))
    return {
        "id": ident,
        "sku": f"SKU-{ident:08d}",
        "name": " ".join(rng.choices(_WORDS, k=3)).title(),
        "price": f"{rng.randrange(100, 9_999_999) / 100:.2f}",
        "tags": rng.sample(_WORDS, rng.randrange(1, 5)),
        "attributes": _compact(
            {
                "color": rng.choice(_WORDS),
                "weight_g": rng.randrange(10, 20_000),
                "dims": [rng.randrange(1, 200) for _ in range(3)],
            }
        ),
        "description": " ".join(words).capitalize() + ".",
        "stock": rng.randrange(0, 10_000),
        "active": rng.random() > 0.1,
        "created_at": f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"
        f"T{rng.randrange(24):02d}:{rng.randrange(60):02d}:00.123456Z",
        "updated_at": 1_717_000_000_000_000 + rng.randrange(10**12),
        "available_from": 19_000 + rng.randrange(1000),
        "ref": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    }


def payloads(
    prefix: str, count: int, seed: int = 7
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``count`` (key, value) payloads, each inserting a distinct row: what
    both formats carry (:func:`records` in JSON, :mod:`bench.avro_events`)."""
    rng = random.Random(seed)
    lsn, ts = 30_000_000, 1_717_171_717_000
    snapshot_lsn = lsn  # every row of Debezium's snapshot carries the one LSN
    for n in range(1, count + 1):
        lsn += rng.randrange(200, 900)
        ts += rng.randrange(0, 3)
        snapshot = n <= count // 2
        at = snapshot_lsn if snapshot else lsn
        source = {
            "version": "3.6.3.Final",
            "connector": "postgresql",
            "name": prefix,
            "ts_ms": ts,
            "snapshot": "true" if snapshot else "false",
            "db": "shop",
            "sequence": _compact([str(at - 400), str(at)]),
            "ts_us": ts * 1000,
            "ts_ns": ts * 1_000_000,
            "schema": "public",
            "table": TABLE.split(".")[1],
            "txId": 900 + n // 3,
            "lsn": at,
            "xmin": None,
            "origin": None,
            "origin_lsn": None,
        }
        payload = {
            "before": None,
            "after": make_row(rng, n),
            "source": source,
            "transaction": None,
            "op": "r" if snapshot else "c",
            "ts_ms": ts + 5,
            "ts_us": (ts + 5) * 1000,
            "ts_ns": (ts + 5) * 1_000_000,
        }
        yield {"id": n}, payload


def records(prefix: str, count: int, seed: int = 7) -> Iterator[tuple[bytes, bytes]]:
    """``count`` (key, value) records in JSON, each inserting a distinct row."""
    env = Envelopes(prefix)
    value_head = f'{{"schema":{env.value_schema},"payload":'
    key_head = f'{{"schema":{env.key_schema},"payload":'
    for key, payload in payloads(prefix, count, seed):
        yield (
            f"{key_head}{_compact(key)}}}".encode(),
            f"{value_head}{_compact(payload)}}}".encode(),
        )


def produce(kafka: KafkaConfig, topic: str, items: list[tuple[bytes, bytes]]) -> None:
    """Write the records to ``topic`` of ``kafka``'s brokers (as its
    ``kafka.client`` settings say), keyed like the connector (by primary key)."""
    producer = kafkaclient.producer(
        kafka,
        {
            "linger.ms": 50,
            "batch.size": 1_000_000,
            "enable.idempotence": True,
            "compression.type": "lz4",
        },
    )
    for key, value in items:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        raise RuntimeError(f"{left} benchmark records were not delivered")
