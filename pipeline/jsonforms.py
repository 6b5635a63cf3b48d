"""The canonical JSON forms of PostgreSQL values, whichever path reads them.

Decimals as exact plain-notation strings (NaN and infinities by name), floats
as JSON numbers (NaN and infinities as strings), timestamps in UTC ISO 8601,
times as ``HH:MM:SS[.ffffff]``, intervals as ISO 8601 durations. Both readers
of :mod:`pipeline.types` (Debezium's Kafka Connect JSON and psycopg's values)
end in these functions, so one row serialises to byte-identical JSON through
either; transforms use them too (:mod:`transforms.builtins`).
``docs/types.md`` is the reference table.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime, time, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

import orjson

_US_PER_DAY = 86_400_000_000
_DECIMAL_SPECIALS = {
    "NaN": "NaN",
    "NAN": "NaN",
    "Infinity": "Infinity",
    "POSITIVE_INFINITY": "Infinity",
    "-Infinity": "-Infinity",
    "NEGATIVE_INFINITY": "-Infinity",
}
_INTERVAL = re.compile(
    r"(-)?P(?:([-+]?\d+)Y)?(?:([-+]?\d+)M)?(?:([-+]?\d+)D)?"
    r"(?:T(?:([-+]?\d+)H)?(?:([-+]?\d+)M)?(?:([-+]?\d+(?:\.\d*)?)S)?)?"
)


def format_decimal(value: Decimal) -> str:
    """Exact plain-notation string of a decimal, keeping its scale."""
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return "-Infinity" if value < 0 else "Infinity"
    return format(value, "f")


def decimal_text(text: str) -> str:
    """Canonical form of a decimal string as Debezium or a user writes it.

    Accepts Java ``BigDecimal.toString`` output (``"1E-8"``) and Debezium's
    special-value names (``"NAN"``, ``"POSITIVE_INFINITY"``).
    """
    special = _DECIMAL_SPECIALS.get(text)
    if special is not None:
        return special
    if "E" not in text and "e" not in text:
        Decimal(text)  # validates
        return text
    return format_decimal(Decimal(text))


def format_float(value: float) -> float | str:
    """A float as JSON allows it: NaN and infinities become strings."""
    if math.isfinite(value):
        return value
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with ``+00:00``; a naive value is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset() != timedelta(0):
        value = value.astimezone(UTC)
    return value.isoformat()


def clock(seconds: int, micros: int) -> str:
    """``HH:MM:SS`` of ``seconds``, ``.ffffff`` added when ``micros``."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{text}.{micros:06d}" if micros else text


def format_time(value: time) -> str:
    """``HH:MM:SS[.ffffff]``; a time with a zone is shifted to UTC, ``Z`` added."""
    seconds = value.hour * 3600 + value.minute * 60 + value.second
    offset = value.utcoffset()
    if offset is None:
        return clock(seconds, value.microsecond)
    seconds = (seconds - int(offset.total_seconds())) % 86_400
    return clock(seconds, value.microsecond) + "Z"


def format_duration(micros: int) -> str:
    """ISO 8601 duration of a number of microseconds: days, hours, minutes, seconds."""
    sign = "-" if micros < 0 else ""
    days, rest = divmod(abs(micros), _US_PER_DAY)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    secs, frac = divmod(rest, 1_000_000)
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if frac:
        clock += f"{secs}.{frac:06d}".rstrip("0") + "S"
    elif secs:
        clock += f"{secs}S"
    if not days and not clock:
        return "PT0S"
    return sign + "P" + (f"{days}D" if days else "") + ("T" + clock if clock else "")


def timedelta_micros(value: timedelta) -> int:
    """Total microseconds of a timedelta, exactly."""
    return (value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds


def interval_micros(text: str) -> int:
    """Microseconds of a Debezium interval string (``P1Y2M3DT4H5M6.5S``).

    A year counts 365 days and a month 30, the rule psycopg uses.
    """
    m = _INTERVAL.fullmatch(text)
    if m is None:
        raise ValueError(f"not an ISO 8601 interval: {text!r}")
    neg, years, months, days, hours, minutes, secs = m.groups()
    day_count = int(years or 0) * 365 + int(months or 0) * 30 + int(days or 0)
    whole = int(hours or 0) * 3600 + int(minutes or 0) * 60
    frac = Decimal(secs or 0) * 1_000_000
    micros = (day_count * 86_400 + whole) * 1_000_000
    micros += int(frac.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    return -micros if neg else micros


#: dates and dataclasses are not JSON types: orjson refuses them as json does
_DOCUMENT_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def document_json(doc: Mapping[str, Any]) -> str:
    """A document as compact JSON text, for the stores that keep JSON text
    (Elasticsearch's bulk lines; Redis's values take
    :func:`document_json_bytes`). See :func:`document_json_bytes`."""
    return document_json_bytes(doc).decode()


def document_json_bytes(doc: Mapping[str, Any]) -> bytes:
    """A document as compact JSON text in UTF-8, as a client sends it.

    orjson writes it, in about a tenth of ``json.dumps``'s time; what orjson
    refuses and json takes (integers beyond 64 bits, keys that are not
    strings) is written by json. As ``json.dumps(allow_nan=False)``, it
    refuses a float NaN or infinity (JSON has no such number; readside's own
    values carry them as strings, only a transform makes one), which orjson
    would write as ``null``.

    Raises:
        TypeError: a value of no JSON type.
        ValueError: a float NaN or infinity.
    """
    try:
        text = orjson.dumps(doc, option=_DOCUMENT_OPTIONS)
    except orjson.JSONEncodeError:
        return json.dumps(
            doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        ).encode()
    if b"null" in text and _non_finite(doc):
        raise ValueError("a float NaN or infinity has no JSON form")
    return text


def _non_finite(value: Any) -> bool:
    """Whether ``value`` holds a float NaN or infinity, at any depth."""
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, Mapping):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(_non_finite(v) for v in value)
    return False
