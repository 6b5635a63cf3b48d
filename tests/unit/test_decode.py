from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from pipeline.decode import (
    FakeMessage,
    Heartbeat,
    JsonDecoder,
    decode,
    table_of_topic,
)
from pipeline.errors import BadRecord
from pipeline.events import UNCHANGED, ChangeEvent, Op, Position

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures" / "debezium"


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def message(fixture: dict[str, Any]) -> FakeMessage:
    return FakeMessage.of_json(
        fixture["topic"],
        fixture["key"],
        fixture["value"],
        partition=fixture["partition"],
        offset=fixture["offset"],
    )


def change(name: str, decoder: JsonDecoder | None = None) -> ChangeEvent:
    event = (decoder or JsonDecoder()).decode(message(load(name)))
    assert isinstance(event, ChangeEvent)
    return event


# --- ops -------------------------------------------------------------------


def test_decode_create_event_maps_envelope_fields() -> None:
    event = change("customers_create.json")
    assert event.table == "public.customers"
    assert event.op is Op.CREATE
    assert event.key == {"id": 1001}
    assert event.before is None
    assert event.after == {
        "id": 1001,
        "email": "sally@example.com",
        "first_name": "Sally",
        "last_name": "Thomas",
        "balance": "120.50",
        "updated_at": "2024-03-01T10:15:30.123456+00:00",
    }
    assert event.lsn == 24023440
    assert event.commit_ts_ms == 1709288130123
    assert event.txid == 771
    assert event.position == Position("shop.public.customers", 0, 10)
    assert event.snapshot is False


def test_decode_update_event_returns_update_op() -> None:
    event = change("customers_update.json")
    assert event.op is Op.UPDATE
    assert event.after is not None
    assert event.after["email"] == "sally.thomas@example.com"
    assert event.after["updated_at"] == "2024-03-02T08:00:00+00:00"
    assert event.lsn == 24025000


def test_decode_delete_event_has_before_and_no_after() -> None:
    event = change("customers_delete.json")
    assert event.op is Op.DELETE
    assert event.after is None
    assert event.before is not None
    assert event.before["id"] == 1001
    assert event.key == {"id": 1001}


@pytest.mark.parametrize(
    "flag", ["true", "first", "last", "first_in_data_collection", "incremental"]
)
def test_decode_snapshot_read_any_snapshot_flag_sets_snapshot(flag: str) -> None:
    fixture = load("customers_snapshot_read.json")
    fixture["value"]["payload"]["source"]["snapshot"] = flag
    event = JsonDecoder().decode(message(fixture))
    assert isinstance(event, ChangeEvent)
    assert event.op is Op.READ
    assert event.snapshot is True
    assert event.lsn == 24000000


def test_decode_streamed_event_snapshot_false_is_not_snapshot() -> None:
    assert change("customers_create.json").snapshot is False


def test_decode_truncate_event_has_no_rows_and_empty_key() -> None:
    event = change("customers_truncate.json")
    assert event.op is Op.TRUNCATE
    assert event.table == "public.customers"
    assert event.key == {}
    assert event.before is None
    assert event.after is None
    assert event.txid == 774


def test_decode_tombstone_derives_table_from_topic() -> None:
    event = change("customers_tombstone.json")
    assert event.op is Op.TOMBSTONE
    assert event.table == "public.customers"
    assert event.key == {"id": 1001}
    assert (event.before, event.after, event.lsn, event.txid) == (None,) * 4
    assert event.position.offset == 13


def test_decode_tombstone_with_dotted_prefix_takes_last_two_parts() -> None:
    msg = FakeMessage.of_json(
        "prod.eu.shop.public.orders",
        {"schema": {"type": "struct", "fields": []}, "payload": {"id": 5}},
        None,
    )
    event = decode(msg)
    assert isinstance(event, ChangeEvent)
    assert event.table == "public.orders"


def test_decode_heartbeat_returns_heartbeat() -> None:
    beat = JsonDecoder().decode(message(load("heartbeat.json")))
    assert beat == Heartbeat(
        ts_ms=1709288131000,
        position=Position("__debezium-heartbeat.shop", 0, 42),
        lsn=None,
        server="shop",
    )


def test_decode_heartbeat_with_lsn_carries_lsn() -> None:
    fixture = load("heartbeat.json")
    fixture["value"]["payload"]["lsn"] = 24050000
    beat = JsonDecoder().decode(message(fixture))
    assert isinstance(beat, Heartbeat)
    assert beat.lsn == 24050000


def test_decode_heartbeat_schema_on_other_topic_returns_heartbeat() -> None:
    fixture = load("heartbeat.json")
    fixture["topic"] = "custom-heartbeats"
    assert isinstance(JsonDecoder().decode(message(fixture)), Heartbeat)


# --- types -----------------------------------------------------------------


EXPECTED_ALL_TYPES: dict[str, Any] = {
    "id": 1,
    "small": 7,
    "big": 9007199254740993,
    "flag": True,
    "real_v": 1.5,
    "dbl": 3.141592653589793,
    "dbl_nan": "NaN",
    "dbl_ninf": "-Infinity",
    "price": "12.50",
    "tiny": "0.00000001",
    "zero": "0.00000000",
    "num_nan": "NaN",
    "num_inf": "Infinity",
    "amount": "1234.56",
    "title": "hello",
    "created": "2024-03-01T10:15:30.123456+00:00",
    "created_whole": "2024-03-01T10:15:30+00:00",
    "updated": "2024-03-01T10:15:30.123456+00:00",
    "updated_ms": "2024-03-01T10:15:30.120000+00:00",
    "birthday": "2024-03-01",
    "opens": "10:30:00",
    "opens_frac": "10:30:00.500000",
    "opens_tz": "08:30:00.500000Z",
    "dur": "P428DT4H5M6.78S",
    "neg_dur": "-PT1H",
    "uid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
    "blob": "3q2+7w==",
    "doc": {"a": [1, 2, {"b": None}], "n": 1.5},
    "attrs": {"color": "red"},
    "tags": ["a", "b", None],
    "scores": [1, 2, 3],
    "prices": ["1.50", "0.0000001"],
    "stamps": ["2024-01-01T00:00:00+00:00"],
    "mood": "happy",
    "search": "'fat':2 'rat':3",
    "note": None,
}


def test_decode_all_types_maps_every_column() -> None:
    event = change("all_types_create.json")
    assert event.after == EXPECTED_ALL_TYPES


def test_decode_all_types_output_serialises_to_plain_json() -> None:
    event = change("all_types_create.json")
    text = json.dumps(event.after, allow_nan=False, sort_keys=True)
    assert json.loads(text) == EXPECTED_ALL_TYPES


def test_decode_numeric_without_source_type_keeps_debezium_string() -> None:
    fixture = load("all_types_create.json")
    for field in fixture["value"]["schema"]["fields"][1]["fields"]:
        field.pop("parameters", None)
    event = JsonDecoder().decode(message(fixture))
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    assert event.after["tiny"] == "1E-8"
    assert event.after["price"] == "12.50"


def test_decode_bare_nan_float_token_becomes_string() -> None:
    fixture = load("all_types_create.json")
    raw = json.dumps(fixture["value"], separators=(",", ":"))
    raw = raw.replace('"dbl_nan":"NaN"', '"dbl_nan":NaN')
    key = json.dumps(fixture["key"]).encode()
    event = JsonDecoder().decode(FakeMessage(fixture["topic"], raw.encode(), key))
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    assert event.after["dbl_nan"] == "NaN"


# --- TOAST -----------------------------------------------------------------


def test_decode_toast_placeholders_default_identity_become_unchanged() -> None:
    event = change("documents_toast_update_default.json")
    assert event.after == {
        "id": 7,
        "title": "new title",
        "body": UNCHANGED,
        "data": UNCHANGED,
        "payload": UNCHANGED,
        "tags": UNCHANGED,
        "nums": UNCHANGED,
        "extras": UNCHANGED,
    }


def test_decode_toast_placeholders_full_identity_merge_before_values() -> None:
    event = change("documents_toast_update_full.json")
    assert event.after == {
        "id": 7,
        "title": "new title",
        "body": "x" * 40,
        "data": {"k": 1},
        "payload": "3q2+7w==",
        "tags": ["t1", "t2"],
        "nums": [4, 5],
        "extras": {"a": "b"},
    }
    assert event.before is not None
    assert event.before["title"] == "old title"


def test_decode_toast_full_identity_null_before_keeps_unchanged() -> None:
    fixture = load("documents_toast_update_full.json")
    fixture["value"]["payload"]["before"]["body"] = None
    event = JsonDecoder().decode(message(fixture))
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    assert event.after["body"] is UNCHANGED


# --- caching and layouts ---------------------------------------------------


def test_decode_repeated_schema_uses_cached_prefix_and_same_result() -> None:
    decoder = JsonDecoder()
    fixture = load("all_types_create.json")
    first = decoder.decode(message(fixture))
    fixture["value"]["payload"]["after"]["title"] = "second"
    second = decoder.decode(message(fixture))
    assert isinstance(first, ChangeEvent)
    assert isinstance(second, ChangeEvent)
    assert second.after == {**EXPECTED_ALL_TYPES, "title": "second"}


def test_decode_pretty_printed_envelope_decodes_like_compact() -> None:
    fixture = load("customers_create.json")
    pretty = FakeMessage(
        fixture["topic"],
        json.dumps(fixture["value"], indent=2).encode(),
        json.dumps(fixture["key"], indent=2).encode(),
    )
    event = JsonDecoder().decode(pretty)
    assert isinstance(event, ChangeEvent)
    assert event.after == change("customers_create.json").after


def test_decode_schema_change_on_same_topic_uses_new_schema() -> None:
    decoder = JsonDecoder()
    fixture = load("customers_create.json")
    decoder.decode(message(fixture))
    changed = copy.deepcopy(fixture)
    row_fields = changed["value"]["schema"]["fields"]
    for f in row_fields[:2]:
        f["fields"].append(
            {
                "type": "int32",
                "optional": True,
                "name": "io.debezium.time.Date",
                "field": "joined",
            }
        )
    changed["value"]["payload"]["after"]["joined"] = 0
    event = decoder.decode(message(changed))
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    assert event.after["joined"] == "1970-01-01"


def test_decode_same_payload_prefix_in_trailing_garbage_raises_bad_record() -> None:
    decoder = JsonDecoder()
    fixture = load("customers_create.json")
    decoder.decode(message(fixture))
    good = message(fixture).msg_value
    assert good is not None
    bad = FakeMessage(fixture["topic"], good + b"garbage", message(fixture).msg_key)
    with pytest.raises(BadRecord) as info:
        decoder.decode(bad)
    assert info.value.reason == "decode"


# --- malformed input -------------------------------------------------------


def _value_message(value: bytes | None, topic: str = "shop.public.customers") -> Any:
    key = json.dumps(load("customers_create.json")["key"]).encode()
    return FakeMessage(topic, value, key)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (b"\xff\xfe\x00garbage", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b"[1, 2, 3]", "envelope"),
        (b'{"payload": {"op": "c"}}', "envelope"),
        (b'{"schema": null, "payload": {"op": "c"}}', "no schema"),
        (b'{"schema": {"type": "struct", "fields": []}, "payload": 5}', "object"),
    ],
)
def test_decode_malformed_value_raises_bad_record(value: bytes, fragment: str) -> None:
    with pytest.raises(BadRecord) as info:
        JsonDecoder().decode(_value_message(value))
    assert info.value.reason == "decode"
    assert fragment in str(info.value)


def _mutated(mutate: Any) -> FakeMessage:
    fixture = load("customers_create.json")
    mutate(fixture["value"]["payload"])
    return message(fixture)


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda p: p.pop("op"), "lacks op or source"),
        (lambda p: p.pop("source"), "lacks op or source"),
        (lambda p: p.update(op="x"), "unknown Debezium op 'x'"),
        (lambda p: p.update(op="m"), "unknown Debezium op 'm'"),
        (lambda p: p["source"].pop("table"), "lacks schema or table"),
        (lambda p: p["source"].update(lsn="abc"), "source.lsn"),
        (lambda p: p.update(after=[1, 2]), "expected an object"),
        (lambda p: p["after"].update(updated_at="yesterday"), "column updated_at"),
        (lambda p: p["after"].update(balance="12,5"), "column balance"),
    ],
)
def test_decode_broken_envelope_raises_bad_record(mutate: Any, fragment: str) -> None:
    with pytest.raises(BadRecord) as info:
        JsonDecoder().decode(_mutated(mutate))
    assert info.value.reason == "decode"
    assert fragment in str(info.value)


def test_decode_bad_schema_raises_bad_record() -> None:
    fixture = load("customers_create.json")
    fixture["value"]["schema"]["fields"][1]["fields"][0]["type"] = "quaternion"
    with pytest.raises(BadRecord, match="unknown Connect schema type"):
        JsonDecoder().decode(message(fixture))


def test_decode_tombstone_without_key_raises_bad_record() -> None:
    with pytest.raises(BadRecord, match="tombstone without a key"):
        JsonDecoder().decode(FakeMessage("shop.public.customers", None, None))


def test_decode_key_not_json_raises_bad_record() -> None:
    msg = FakeMessage("shop.public.customers", None, b"\x00\x01")
    with pytest.raises(BadRecord) as info:
        JsonDecoder().decode(msg)
    assert info.value.reason == "decode"


def test_decode_kafka_error_message_raises_value_error() -> None:
    msg = FakeMessage("t", b"{}", msg_error="_PARTITION_EOF")
    with pytest.raises(ValueError, match="Kafka error"):
        JsonDecoder().decode(msg)


def test_table_of_topic_short_name_raises_bad_record() -> None:
    with pytest.raises(BadRecord):
        table_of_topic("orders")


# --- events captured from the real stack (added by the lead) ---------------

CAPTURED = sorted((FIXTURES / "captured").glob("*.json"))


@pytest.mark.skipif(not CAPTURED, reason="no captured events present")
@pytest.mark.parametrize("path", CAPTURED, ids=lambda p: p.name)
def test_decode_captured_event_decodes_to_table_of_topic(path: Path) -> None:
    captured = json.loads(path.read_text())
    topic = path.name.rsplit("-", 1)[0]
    msg = FakeMessage.of_json(topic, captured["key"], captured["value"])
    event = JsonDecoder().decode(msg)
    assert isinstance(event, ChangeEvent)
    assert event.table == table_of_topic(topic)
    assert event.key
    if event.after is not None:
        json.dumps(event.after, allow_nan=False)  # plain JSON, no UNCHANGED
        assert UNCHANGED not in event.after.values()


@pytest.mark.parametrize(
    ("sequence", "expected"),
    [
        ('["22811504","22811608"]', (22811504, 22811608)),
        ('[ "1" , "2" ]', (1, 2)),  # spaced: parsed as JSON
        ('[null,"22811608"]', None),
        ('["22811504",null]', None),
        ('["a","2"]', None),
        ('["1","2","3"]', None),
        ("not json", None),
    ],
)
def test_stream_pos_reads_debezium_sequence_forms(
    sequence: str, expected: tuple[int, int] | None
) -> None:
    from pipeline.source.envelope import _stream_pos

    assert _stream_pos({"sequence": sequence}) == expected
    assert _stream_pos({}) is None
