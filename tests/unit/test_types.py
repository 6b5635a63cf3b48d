"""Parity of the two paths into JSON: Debezium events and psycopg rows.

The psycopg values below are what psycopg 3 returns for the same row that
``tests/fixtures/debezium/all_types_create.json`` carries (checked once
against PostgreSQL 15 with TimeZone=Europe/Berlin and money read as
``money::numeric``).
"""

from __future__ import annotations

import ipaddress
import json
import random
import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pipeline.decode import FakeMessage, JsonDecoder
from pipeline.events import UNCHANGED, ChangeEvent
from pipeline.jsonforms import decimal_text, format_duration, interval_micros
from pipeline.types import (
    PLACEHOLDER,
    PLACEHOLDER_BASE64,
    FieldError,
    SchemaError,
    field_converter,
    pg_row_to_json,
    pg_value_to_json,
    struct_converter,
)

pytestmark = pytest.mark.unit

FIXTURE = (
    Path(__file__).parent.parent / "fixtures" / "debezium" / "all_types_create.json"
)
BERLIN = ZoneInfo("Europe/Berlin")

PSYCOPG_ROW: dict[str, Any] = {
    "id": 1,
    "small": 7,
    "big": 9007199254740993,
    "flag": True,
    "real_v": 1.5,
    "dbl": 3.141592653589793,
    "dbl_nan": float("nan"),
    "dbl_ninf": float("-inf"),
    "price": Decimal("12.50"),
    "tiny": Decimal("1E-8"),
    "zero": Decimal("0E-8"),
    "num_nan": Decimal("NaN"),
    "num_inf": Decimal("Infinity"),
    "amount": Decimal("1234.56"),
    "title": "hello",
    "created": datetime(2024, 3, 1, 11, 15, 30, 123456, tzinfo=BERLIN),
    "created_whole": datetime(2024, 3, 1, 11, 15, 30, tzinfo=BERLIN),
    "updated": datetime(2024, 3, 1, 10, 15, 30, 123456),
    "updated_ms": datetime(2024, 3, 1, 10, 15, 30, 120000),
    "birthday": date(2024, 3, 1),
    "opens": time(10, 30),
    "opens_frac": time(10, 30, 0, 500000),
    "opens_tz": time(10, 30, 0, 500000, tzinfo=timezone(timedelta(hours=2))),
    "dur": timedelta(days=428, seconds=14706, microseconds=780000),
    "neg_dur": timedelta(hours=-1),
    "uid": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
    "blob": b"\xde\xad\xbe\xef",
    "doc": {"a": [1, 2, {"b": None}], "n": 1.5},
    "attrs": {"color": "red"},
    "tags": ["a", "b", None],
    "scores": [1, 2, 3],
    "prices": [Decimal("1.50"), Decimal("1E-7")],
    "stamps": [datetime(2024, 1, 1, 1, 0, tzinfo=BERLIN)],
    "mood": "happy",
    "search": "'fat':2 'rat':3",
    "note": None,
}


def _decoded_row() -> dict[str, Any]:
    fixture = json.loads(FIXTURE.read_text())
    msg = FakeMessage.of_json(fixture["topic"], fixture["key"], fixture["value"])
    event = JsonDecoder().decode(msg)
    assert isinstance(event, ChangeEvent)
    assert event.after is not None
    return event.after


def _canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, allow_nan=False).encode()


def test_pg_row_to_json_all_types_byte_identical_to_decoded_event() -> None:
    assert _canonical_json(pg_row_to_json(PSYCOPG_ROW)) == _canonical_json(
        _decoded_row()
    )


@pytest.mark.parametrize("column", sorted(PSYCOPG_ROW))
def test_pg_value_to_json_each_column_matches_decoded_value(column: str) -> None:
    assert pg_value_to_json(PSYCOPG_ROW[column]) == _decoded_row()[column]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (memoryview(b"\x00\x01"), "AAE="),
        (bytearray(b"\xff"), "/w=="),
        ((1, "x"), [1, "x"]),
        (float("inf"), "Infinity"),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00+00:00"),
        (ipaddress.ip_interface("192.168.0.1/24"), "192.168.0.1/24"),
        (ipaddress.ip_network("10.0.0.0/8"), "10.0.0.0/8"),
        (ipaddress.ip_address("::1"), "::1"),
        (timedelta(0), "PT0S"),
        (timedelta(days=1, hours=-1), "PT23H"),
        (timedelta(days=-2, microseconds=5), "-P1DT23H59M59.999995S"),
        (time(0, 30, tzinfo=timezone(timedelta(hours=2))), "22:30:00Z"),
    ],
)
def test_pg_value_to_json_other_python_values_map_to_canonical(
    value: Any, expected: Any
) -> None:
    assert pg_value_to_json(value) == expected


def test_pg_value_to_json_unknown_type_raises_type_error() -> None:
    with pytest.raises(TypeError, match="cast the column to text"):
        pg_value_to_json(object())


@pytest.mark.parametrize(
    ("debezium", "psycopg"),
    [
        ("P0Y0M1DT-1H0M0S", timedelta(days=1, hours=-1)),
        ("P-1Y-2M0DT0H0M0S", timedelta(days=-425)),
        ("P0Y0M0DT0H0M-0.5S", timedelta(microseconds=-500000)),
        ("P0Y0M0DT25H0M0S", timedelta(hours=25)),
        ("P0Y0M0DT0H0M0S", timedelta(0)),
    ],
)
def test_interval_debezium_string_and_timedelta_give_same_duration(
    debezium: str, psycopg: timedelta
) -> None:
    assert format_duration(interval_micros(debezium)) == pg_value_to_json(psycopg)


def test_interval_micros_not_iso_raises_value_error() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        interval_micros("1 day")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.50", "12.50"),
        ("1E+3", "1000"),
        ("-1.5E-7", "-0.00000015"),
        ("NEGATIVE_INFINITY", "-Infinity"),
    ],
)
def test_decimal_text_java_forms_become_plain(text: str, expected: str) -> None:
    assert decimal_text(text) == expected


@pytest.mark.parametrize(
    ("schema", "value"),
    [
        ({"type": "string"}, PLACEHOLDER),
        ({"type": "string"}, PLACEHOLDER_BASE64),
        ({"type": "bytes"}, PLACEHOLDER_BASE64),
        ({"type": "string", "name": "io.debezium.data.Json"}, PLACEHOLDER),
        ({"type": "string", "name": "io.debezium.data.Uuid"}, PLACEHOLDER),
        ({"type": "array", "items": {"type": "string"}}, [PLACEHOLDER]),
        ({"type": "array", "items": {"type": "int64"}}, list(PLACEHOLDER.encode())),
        ({"type": "map", "values": {"type": "string"}}, {PLACEHOLDER: PLACEHOLDER}),
        (
            {
                "type": "bytes",
                "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "2"},
            },
            PLACEHOLDER_BASE64,
        ),
    ],
)
def test_field_converter_toast_placeholder_forms_become_unchanged(
    schema: dict[str, Any], value: Any
) -> None:
    convert = field_converter(schema)
    assert convert is not None
    assert convert(value) is UNCHANGED


def test_field_converter_precise_decimal_bytes_give_decimal_string() -> None:
    convert = field_converter(
        {
            "type": "bytes",
            "name": "org.apache.kafka.connect.data.Decimal",
            "parameters": {"scale": "2"},
        }
    )
    assert convert is not None
    assert convert("BNI=") == "12.34"  # 0x04d2 == 1234


def test_field_converter_variable_scale_decimal_gives_decimal_string() -> None:
    convert = field_converter(
        {"type": "struct", "name": "io.debezium.data.VariableScaleDecimal"}
    )
    assert convert is not None
    assert convert({"scale": 3, "value": "/w=="}) == "-0.001"


def test_field_converter_timestamp_out_of_range_gives_infinity() -> None:
    convert = field_converter(
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}
    )
    assert convert is not None
    assert convert(9_223_372_036_825_200_000) == "infinity"


def _by_datetime(micros: int) -> str:
    """A MicroTimestamp's form made the plain way: the datetime's isoformat."""
    try:
        return (
            datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=micros)
        ).isoformat()
    except OverflowError:
        return "infinity" if micros > 0 else "-infinity"


_YEAR_1 = -62_135_596_800_000_000  # 0001-01-01T00:00:00 in micros since the epoch
_YEAR_10000 = 253_402_300_800_000_000


@pytest.mark.parametrize(
    "micros",
    [
        0, 1, -1, 999_999, 1_000_000, -1_000_000, 86_400_000_000 - 1,
        86_400_000_000, -86_400_000_000, 1_717_171_717_005_123,
        1_717_171_717_000_000, -1_717_171_717_005_123,
        _YEAR_1, _YEAR_1 - 1, _YEAR_10000 - 1, _YEAR_10000,
        2**63 - 1, -(2**63),
    ],
)  # fmt: skip
def test_micro_timestamp_is_the_datetimes_isoformat(micros: int) -> None:
    """Written without a datetime (it runs for every timestamp of every
    event), the form is exactly the datetime's ``isoformat()``: a fraction
    only when there is one, years 1-9999, infinity beyond."""
    convert = field_converter(
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}
    )
    assert convert is not None
    assert convert(micros) == _by_datetime(micros)


def test_micro_timestamps_and_dates_match_the_datetimes_over_the_whole_range() -> None:
    rng = random.Random(12)
    micro = field_converter(
        {"type": "int64", "name": "io.debezium.time.MicroTimestamp"}
    )
    days = field_converter({"type": "int32", "name": "io.debezium.time.Date"})
    assert micro is not None
    assert days is not None
    for _ in range(20_000):
        v = rng.randrange(_YEAR_1 - 10**12, _YEAR_10000 + 10**12)
        assert micro(v) == _by_datetime(v), v
        d = rng.randrange(-800_000, 3_000_000)
        try:
            want = (date(1970, 1, 1) + timedelta(days=d)).isoformat()
        except OverflowError:
            want = "infinity" if d > 0 else "-infinity"
        assert days(d) == want, d


@pytest.mark.parametrize(
    "text",
    [
        "2024-05-31T12:00:00.123456Z",
        "2024-05-31T12:00:00Z",
        "2024-05-31T12:00:00.000000Z",
        "2024-05-31T12:00:00.1Z",
        "0001-01-01T00:00:00Z",
        "2024-05-31T12:00:00+02:00",
        "2024-05-31T12:00:00.5-03:30",
        "2024-05-31T12:00:00",
    ],
)
def test_zoned_timestamp_is_in_utc_as_the_datetime_says(text: str) -> None:
    convert = field_converter(
        {"type": "string", "name": "io.debezium.time.ZonedTimestamp"}
    )
    assert convert is not None
    value = datetime.fromisoformat(text)
    value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    assert convert(text) == value.isoformat()


def test_field_converter_unknown_type_raises_schema_error() -> None:
    with pytest.raises(SchemaError):
        field_converter({"type": "quaternion"})


def test_struct_converter_bad_field_value_names_column() -> None:
    convert = struct_converter(
        {
            "type": "struct",
            "fields": [
                {"type": "int32", "name": "io.debezium.time.Date", "field": "d"},
            ],
        }
    )
    with pytest.raises(ValueError, match="column d"):
        convert({"d": "not-a-number"})


def test_struct_converter_field_names_are_data_and_errors_name_the_path() -> None:
    """The converter is generated Python: a field name that reads like code
    stays a key, and each kind of failure names the field as before."""
    odd = "x') or __import__('os').system('false') or ('"
    convert = struct_converter(
        {
            "type": "struct",
            "fields": [
                {"type": "string", "field": odd},
                {
                    "type": "int64",
                    "name": "io.debezium.time.MicroTimestamp",
                    "field": "t",
                },
                {"type": "int32", "field": "plain"},
                {
                    "type": "struct",
                    "field": "inner",
                    "fields": [
                        {"type": "int32", "name": "io.debezium.time.Date", "field": "d"}
                    ],
                },
            ],
        }
    )
    row = {odd: PLACEHOLDER, "t": 0, "plain": "left as is", "inner": {"d": 1}}
    assert convert(row) == {
        odd: UNCHANGED,
        "t": "1970-01-01T00:00:00+00:00",
        "plain": "left as is",
        "inner": {"d": "1970-01-02"},
    }
    assert convert({"t": None}) == {"t": None}  # absent and null pass
    with pytest.raises(FieldError, match=r"column inner\.d: TypeError") as nested:
        convert({"inner": {"d": "x"}})
    assert nested.value.path == "inner.d"
    with pytest.raises(FieldError, match="column t: TypeError"):
        convert({"t": "x"})
    with pytest.raises(FieldError, match=r"column <row>: .*expected an object"):
        convert(["not", "a", "row"])


def test_struct_converter_does_not_mutate_input_row() -> None:
    convert = struct_converter(
        {"type": "struct", "fields": [{"type": "string", "field": "s"}]}
    )
    row = {"s": PLACEHOLDER}
    out = convert(row)
    assert out == {"s": UNCHANGED}
    assert row == {"s": PLACEHOLDER}
