"""The Avro converter offline: wire format, schema cache, type parity with JSON.

The parity check takes the Connect schema of the JSON fixture with every
type, writes it as Apicurio's converter does (Confluent's AvroData mapping:
optional fields as ``["null", T]``, ``connect.name``/``connect.parameters``/
``connect.type`` properties, logical types), encodes the same payload with
fastavro, and expects the very event the JSON converter decodes.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import fastavro
import pytest
from repo_config import DATA, write_config

from pipeline import config
from pipeline.decode import FakeMessage, JsonDecoder
from pipeline.errors import BadRecord, ConfigError, TransientError
from pipeline.events import ChangeEvent
from pipeline.source.avro_converter import AvroConverter
from pipeline.source.avro_schema import connect_schema
from pipeline.source.converter import converter_for, record_format
from pipeline.source.registry import SchemaRegistry
from pipeline.sourceconfig import ConnectConfig, KafkaConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "debezium"
_AVRO = {
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "long",
    "float": "float",
    "double": "double",
    "boolean": "boolean",
    "string": "string",
    "bytes": "bytes",
}
_LOGICAL = {
    "org.apache.kafka.connect.data.Decimal": "decimal",
    "org.apache.kafka.connect.data.Date": "date",
    "org.apache.kafka.connect.data.Timestamp": "timestamp-millis",
}


def to_avro(schema: dict[str, Any], names: set[str]) -> Any:
    """A Connect schema as Confluent's AvroData writes it (the parts used here)."""
    kind = schema["type"]
    out: Any
    if kind == "struct":
        name = schema.get("name", "ConnectDefault")
        if name in names:
            out = name
        else:
            names.add(name)
            out = {
                "type": "record",
                "name": name,
                "fields": [
                    {"name": f["field"], "type": to_avro(f, names)}
                    for f in schema["fields"]
                ],
            }
    elif kind == "array":
        out = {"type": "array", "items": to_avro(schema["items"], names)}
    elif kind == "map":
        out = {"type": "map", "values": to_avro(schema["values"], names)}
    else:
        out = {"type": _AVRO[kind]}
        if kind in ("int8", "int16"):
            out["connect.type"] = kind
    if isinstance(out, dict) and kind != "struct":
        if "name" in schema:
            out["connect.name"] = schema["name"]
            if schema["name"] in _LOGICAL:
                out["logicalType"] = _LOGICAL[schema["name"]]
        if "parameters" in schema:
            out["connect.parameters"] = schema["parameters"]
    return ["null", out] if schema.get("optional") else out


def to_avro_value(schema: dict[str, Any], value: Any) -> Any:
    """A JsonConverter payload value as the Avro datum: base64 bytes decoded."""
    if value is None:
        return None
    kind = schema["type"]
    if kind == "bytes":
        return base64.b64decode(value)
    if kind in ("float", "double") and isinstance(value, str):
        return float(value)  # JsonConverter writes NaN and infinities as text
    if kind == "struct":
        return {
            f["field"]: to_avro_value(f, value.get(f["field"]))
            for f in schema["fields"]
        }
    if kind == "array":
        return [to_avro_value(schema["items"], v) for v in value]
    return value


class StubRegistry(SchemaRegistry):
    def __init__(self, schemas: dict[int, Any]) -> None:
        super().__init__("http://registry.invalid")
        self.schemas = schemas
        self.fetched: list[int] = []

    def schema(self, schema_id: int) -> Any:
        self.fetched.append(schema_id)
        if schema_id not in self.schemas:
            raise BadRecord("decode", f"schema id {schema_id} is not in the registry")
        return self.schemas[schema_id]


def encode(schema_id: int, avro: Any, datum: Any) -> bytes:
    out = io.BytesIO()
    out.write(b"\x00" + schema_id.to_bytes(4, "big"))
    fastavro.schemaless_writer(out, fastavro.parse_schema(avro), datum)
    return out.getvalue()


def as_avro(fixture: dict[str, Any], registry: dict[int, Any]) -> FakeMessage:
    """The fixture's record in the Confluent Avro wire format."""
    parts = []
    for n, side in enumerate(("key", "value"), start=1):
        envelope = fixture[side]
        avro = to_avro(envelope["schema"], set())
        registry[n] = avro
        parts.append(
            encode(n, avro, to_avro_value(envelope["schema"], envelope["payload"]))
        )
    return FakeMessage(
        fixture["topic"], parts[1], parts[0], fixture["partition"], fixture["offset"]
    )


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@pytest.mark.parametrize(
    "name", ["all_types_create.json", "customers_create.json", "customers_update.json"]
)
def test_avro_converter_fixture_decodes_as_json_does(name: str) -> None:
    fixture = load(name)
    schemas: dict[int, Any] = {}
    msg = as_avro(fixture, schemas)
    got = AvroConverter(StubRegistry(schemas)).decode(msg)
    want = JsonDecoder().decode(
        FakeMessage.of_json(
            fixture["topic"],
            fixture["key"],
            fixture["value"],
            partition=fixture["partition"],
            offset=fixture["offset"],
        )
    )
    assert isinstance(got, ChangeEvent)
    assert got == want


def test_avro_converter_fetches_each_schema_id_once() -> None:
    fixture = load("customers_create.json")
    schemas: dict[int, Any] = {}
    msg = as_avro(fixture, schemas)
    registry = StubRegistry(schemas)
    converter = AvroConverter(registry)
    for _ in range(3):
        converter.decode(msg)
    assert registry.fetched == [1, 2]


def test_avro_converter_fetches_says_which_records_ask_the_registry() -> None:
    fixture = load("customers_create.json")
    schemas: dict[int, Any] = {}
    msg = as_avro(fixture, schemas)
    registry = StubRegistry(schemas)
    converter = AvroConverter(registry)
    assert converter.fetches(msg)  # neither schema fetched yet
    converter.decode(msg)
    assert not converter.fetches(msg)
    tombstone = FakeMessage(fixture["topic"], None, msg.key(), 0, 9)
    assert not converter.fetches(tombstone)  # its key schema is known
    new_value = FakeMessage(fixture["topic"], b"\x00\x00\x00\x00\x07" + b"x", None)
    assert converter.fetches(new_value)
    not_avro = FakeMessage(fixture["topic"], b'{"schema":{}}', b"{}")
    assert not converter.fetches(not_avro)  # nothing to fetch: a dead letter
    assert registry.fetched == [1, 2]  # fetches() itself asks nothing


def test_avro_converter_json_bytes_is_bad_record_naming_wire_format() -> None:
    fixture = load("customers_create.json")
    msg = FakeMessage.of_json(fixture["topic"], None, fixture["value"])
    with pytest.raises(BadRecord, match="Confluent Avro wire format"):
        AvroConverter(StubRegistry({})).decode(msg)


def test_avro_converter_unknown_schema_id_is_bad_record() -> None:
    msg = FakeMessage("p.public.t", b"\x00\x00\x00\x00\x07\x02")
    with pytest.raises(BadRecord, match="schema id 7"):
        AvroConverter(StubRegistry({})).decode(msg)


def test_avro_converter_truncated_datum_is_bad_record() -> None:
    fixture = load("customers_create.json")
    schemas: dict[int, Any] = {}
    msg = as_avro(fixture, schemas)
    cut = FakeMessage(msg.msg_topic, (msg.msg_value or b"")[:12], msg.msg_key)
    with pytest.raises(BadRecord, match="not a valid Avro datum"):
        AvroConverter(StubRegistry(schemas)).decode(cut)


def test_avro_converter_float32_reads_as_shortest_decimal() -> None:
    avro = {
        "type": "record",
        "name": "Value",
        "fields": [{"name": "r", "type": ["null", "float"]}],
    }
    row = AvroConverter(StubRegistry({}))
    schema = connect_schema(avro)
    assert schema["fields"][0]["type"] == "float"
    buf = encode(1, avro, {"r": 0.1})
    read = fastavro.schemaless_reader(io.BytesIO(buf[5:]), fastavro.parse_schema(avro))
    assert read["r"] != 0.1  # what fastavro gives: the float32 value exactly
    from pipeline.source.avro_schema import avro_struct

    assert avro_struct(schema)(read) == {"r": 0.1}
    assert row.registry.base.endswith("/apis/ccompat/v7")


def test_schema_registry_unreachable_is_transient_after_retries() -> None:
    slept: list[float] = []
    registry = SchemaRegistry(
        "http://127.0.0.1:9", timeout_s=0.5, retry_for_s=1.0, sleep=slept.append
    )
    with pytest.raises(TransientError, match="did not answer"):
        registry.schema(1)
    assert slept  # retried with backoff before giving up


def test_config_kafka_format_bad_value_names_the_field(tmp_path: Path) -> None:
    data = {**DATA, "kafka": {**DATA["kafka"], "format": "protobuf"}}
    path = write_config(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    assert "kafka.format: Input should be 'json' or 'avro'" in str(info.value)


def test_record_format_avro_sets_apicurio_confluent_wire_format() -> None:
    kafka = KafkaConfig(format="avro", schema_registry_url="http://r:1/")
    settings = record_format(kafka, ConnectConfig())
    for side in ("key", "value"):
        pre = f"{side}.converter"
        assert settings[pre] == "io.apicurio.registry.utils.converter.AvroConverter"
        assert settings[f"{pre}.apicurio.registry.url"] == "http://r:1/apis/registry/v2"
        assert settings[f"{pre}.apicurio.registry.as-confluent"] == "true"
        assert settings[f"{pre}.apicurio.registry.use-id"] == "contentId"
        assert settings[f"{pre}.apicurio.registry.headers.enabled"] == "false"
        assert settings[f"{pre}.apicurio.registry.fault-tolerant-refresh"] == "true"
        assert f"{pre}.apicurio.auth.username" not in settings
    assert isinstance(converter_for(kafka), AvroConverter)


def test_record_format_avro_logs_the_converter_in_by_reference() -> None:
    """The converter's registry password is a config-provider reference
    Connect resolves: the connector config never holds it."""
    ref = "${file:secrets/registry-connect.properties:password}"
    connect = ConnectConfig(
        registry_username="readside-connect", registry_password_ref=ref
    )
    settings = record_format(KafkaConfig(format="avro"), connect)
    for side in ("key", "value"):
        assert (
            settings[f"{side}.converter.apicurio.auth.username"] == "readside-connect"
        )
        assert settings[f"{side}.converter.apicurio.auth.password"] == ref


def test_registry_logins_come_whole_and_the_converter_s_only_by_reference() -> None:
    with pytest.raises(ValueError, match="schema_registry_username and schema_regis"):
        KafkaConfig(schema_registry_username="w")
    with pytest.raises(ValueError, match="registry_username and registry_password_ref"):
        ConnectConfig(registry_username="c")
    with pytest.raises(ValueError, match="registry_password_ref"):
        ConnectConfig(registry_username="c", registry_password_ref="plain-secret")


def test_schema_registry_of_sends_the_worker_s_login_as_basic_auth() -> None:
    kafka = KafkaConfig(schema_registry_username="w", schema_registry_password="s3")
    registry = SchemaRegistry.of(kafka)
    assert registry._headers == {"Authorization": "Basic dzpzMw=="}  # w:s3
    assert SchemaRegistry.of(KafkaConfig())._headers == {}


def test_record_format_json_keeps_jsonconverter_with_schemas() -> None:
    settings = record_format(KafkaConfig(), ConnectConfig())
    assert settings["value.converter"] == "org.apache.kafka.connect.json.JsonConverter"
    assert settings["value.converter.schemas.enable"] == "true"
    assert isinstance(converter_for(KafkaConfig()), JsonDecoder)
