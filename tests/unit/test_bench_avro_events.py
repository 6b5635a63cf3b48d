"""The benchmark's Avro records: the same changes as its JSON records.

The registry is an in-memory stand-in with the registry's ``schema(id)``
method; it hands out the schemas as the real one does (JSON text parsed
back), so the converter sees what it would read over HTTP.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import avro_events, events
from pipeline.decode import FakeMessage, JsonDecoder
from pipeline.errors import BadRecord
from pipeline.events import ChangeEvent
from pipeline.source.avro_converter import AvroConverter, schema_id
from pipeline.source.avro_schema import connect_schema
from pipeline.source.registry import SchemaRegistry

pytestmark = pytest.mark.unit

PREFIX = "benchunit"
TOPIC = f"{PREFIX}.{events.TABLE}"
KEY_ID, VALUE_ID = 41, 42


class MemoryRegistry(SchemaRegistry):
    """Schemas by id, in memory, as the registry's ccompat API gives them."""

    def __init__(self, schemas: dict[int, Any]) -> None:
        super().__init__("http://registry.invalid")
        self.texts = {sid: json.dumps(s) for sid, s in schemas.items()}
        self.fetched: list[int] = []

    def schema(self, schema_id: int) -> Any:
        self.fetched.append(schema_id)
        if schema_id not in self.texts:
            raise BadRecord("decode", f"schema id {schema_id} is not in the registry")
        return json.loads(self.texts[schema_id])


def _registry() -> MemoryRegistry:
    schemas = avro_events.AvroSchemas.of(PREFIX)
    return MemoryRegistry({KEY_ID: schemas.key, VALUE_ID: schemas.value})


def test_avro_events_decode_to_the_json_records_change_events() -> None:
    count = 300
    avro = list(avro_events.records(PREFIX, count, KEY_ID, VALUE_ID))
    plain = list(events.records(PREFIX, count))
    registry = _registry()
    from_avro, from_json = AvroConverter(registry), JsonDecoder()
    ops = set()
    for n, ((akey, avalue), (jkey, jvalue)) in enumerate(zip(avro, plain, strict=True)):
        part, offset = n % 3, n // 3
        got = from_avro.decode(FakeMessage(TOPIC, avalue, akey, part, offset))
        want = from_json.decode(FakeMessage(TOPIC, jvalue, jkey, part, offset))
        assert isinstance(got, ChangeEvent)
        assert got == want, n
        ops.add(got.op)
    assert len(ops) == 2  # snapshot reads and creates, as in the JSON records
    assert sorted(set(registry.fetched)) == [KEY_ID, VALUE_ID]
    assert len(registry.fetched) == 2  # each schema fetched once


def test_avro_events_confluent_wire_format_with_registry_ids() -> None:
    ((key, value),) = avro_events.records(PREFIX, 1, KEY_ID, VALUE_ID)
    assert value[:1] == b"\x00"
    assert key[:1] == b"\x00"
    assert schema_id(value, "value") == VALUE_ID
    assert schema_id(key, "key") == KEY_ID
    plain_value = next(events.records(PREFIX, 1))[1]
    assert len(value) < len(plain_value) // 4  # no schema in the record


def _strip(schema: Any) -> Any:
    """A Connect schema without what the Avro mapping does not carry back."""
    if isinstance(schema, list):
        return [_strip(s) for s in schema]
    if isinstance(schema, dict):
        return {
            k: _strip(v)
            for k, v in schema.items()
            if k not in ("optional", "version", "default")
        }
    return schema


def test_avro_events_schemas_read_back_as_the_connect_schemas() -> None:
    schemas = avro_events.AvroSchemas.of(PREFIX)
    env = events.Envelopes(PREFIX)
    assert connect_schema(schemas.value) == _strip(json.loads(env.value_schema))
    assert connect_schema(schemas.key) == _strip(json.loads(env.key_schema))


def test_avro_events_schema_shape_of_the_connectors_converter() -> None:
    value = avro_events.AvroSchemas.of(PREFIX).value
    assert value["type"] == "record"
    assert value["name"] == "Envelope"
    assert value["namespace"] == f"{PREFIX}.public.items"
    assert value["connect.name"] == f"{PREFIX}.public.items.Envelope"
    fields = {f["name"]: f for f in value["fields"]}
    # optional: a union with null first and a null default
    assert fields["before"]["type"][0] == "null"
    assert fields["before"]["default"] is None
    # the second use of a record is its name
    assert fields["after"]["type"] == ["null", "Value"]
    assert fields["op"]["type"] == "string"
    ts_us = {"name": "ts_us", "type": ["null", "long"], "default": None}
    assert fields["ts_us"] == ts_us
    source = fields["source"]["type"]
    assert source["connect.name"] == "io.debezium.connector.postgresql.Source"
    snapshot = {f["name"]: f for f in source["fields"]}["snapshot"]
    # an optional field with a default: its type first, the default its value
    assert snapshot["default"] == "false"
    assert snapshot["type"][1] == "null"
    assert snapshot["type"][0]["connect.name"] == "io.debezium.data.Enum"
    row = fields["before"]["type"][1]
    cols = {f["name"]: f["type"] for f in row["fields"]}
    assert cols["price"]["connect.parameters"] == {
        "__debezium.source.column.type": "NUMERIC",
        "__debezium.source.column.length": "10",
        "__debezium.source.column.scale": "2",
    }
    assert cols["tags"]["items"] == ["null", "string"]
    assert cols["updated_at"][1]["connect.name"] == "io.debezium.time.MicroTimestamp"
