"""The report of ``python -m bench``: the formats' rows side by side."""

from __future__ import annotations

from typing import Any

import pytest

from bench.stages import STAGES
from bench.worker_report import markdown

pytestmark = pytest.mark.unit


def _rate(per_s: float, size: float, how: str | None = None) -> dict[str, Any]:
    row = {
        "events": 1000,
        "elapsed_s": 1000 / per_s,
        "events_per_s": per_s,
        "mb_per_s": per_s * size / 1e6,
        "avg_value_bytes": size,
    }
    return row if how is None else {**row, "how": how}


def _run(per_s: float, raw: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "events": 1000,
        "complete": True,
        "elapsed_s": 1000 / per_s,
        "events_per_s": per_s,
        "peak_rss_mb": 150.0,
        "scenario_events": 1000,
        "cpu_us_per_event": {
            **dict.fromkeys(STAGES, 5.0),
            "other (main thread)": 2.0,
            "other threads": 3.0,
            "total": 35.0,
        },
    }
    if raw is not None:
        row["raw_docs_per_s"] = raw
    return row


def _format(decode: float, bare: float, size: float, how: str) -> dict[str, Any]:
    return {
        "prefix": "p",
        "decode": _rate(decode, size),
        "bare": [_rate(bare, size, how)],
        "rows": {"redis": _run(decode / 4, decode / 2), "all": _run(1000, None)},
    }


def test_worker_report_puts_each_measurement_of_both_formats_side_by_side() -> None:
    results = {
        "machine": {
            "nproc": 2,
            "memory_mb": 4096,
            "cpu": "cpu",
            "python": "3.11",
            "platform": "linux",
            "packages": {"redis": "5"},
            "servers": {},
        },
        "events": 1000,
        "avg_row_bytes": 717.0,
        "formats": {
            "json": _format(50_000, 800_000, 6580, "orjson.loads"),
            "avro": _format(150_000, 300_000, 900, "fastavro.schemaless_reader"),
        },
    }
    text = markdown(results)
    lines = text.splitlines()
    rows = [line for line in lines if line.startswith("| ")]
    decode = [r for r in rows if r.startswith("| readside converter")]
    assert [r.split(" | ")[1] for r in decode] == ["json", "avro"]
    assert decode[0].endswith("| 6,580 | - |")
    bare = [r for r in rows if r.startswith("| bare parse: ")]
    assert [r.split(" | ")[1] for r in bare] == ["json", "avro"]
    assert bare[0].startswith("| bare parse: orjson.loads | json | 1,000 |")
    assert bare[0].endswith("| 6,580 | 0.06 |")
    assert bare[1].endswith("| 900 | 0.50 |")
    redis = [r for r in rows if r.startswith("| worker, redis |")]
    assert [r.split(" | ")[1] for r in redis] == ["json", "avro", "json", "avro"]
    assert "| 12,500 | 25,000 | 0.50 | 150 |" in redis[0]
    assert "| 37,500 | 75,000 | 0.50 | 150 |" in redis[1]
    assert redis[2].endswith("| 5.0 | 5.0 | 5.0 | 5.0 | 5.0 | 5.0 | 2.0 | 3.0 | 35.0 |")
    assert sum(r.startswith("| worker, all three sinks |") for r in rows) == 4


def test_worker_report_shows_the_machine_cpu_of_each_process() -> None:
    fmt = _format(50_000, 800_000, 6580, "orjson.loads")
    fmt["rows"]["redis"]["machine"] = {
        "cpu_us_per_event": {
            "self": 40.0,
            "kafka": 12.5,
            "redis": 6.0,
            "ferretdb_backend": 1.0,
            "connect": 2.0,
            "other": 3.0,
        },
        "busy_cores": 1.84,
        "cores": 2,
    }
    fmt["rows"]["redis"]["raw_machine"] = {
        "cpu_us_per_event": {"self": 15.0, "redis": 8.0, "other": 0.5},
        "busy_cores": 1.2,
        "cores": 2,
    }
    results = {
        "machine": {
            "nproc": 2,
            "memory_mb": 1,
            "cpu": "c",
            "python": "3",
            "platform": "l",
            "packages": {},
            "servers": {},
        },
        "events": 1000,
        "avg_row_bytes": 717.0,
        "formats": {"json": fmt},
    }
    rows = markdown(results).splitlines()
    assert (
        "| worker, redis | json | 40.0 | 12.5 | 6.0 | - | 1.0 | 2.0 | 3.0 | 1.84 of 2 |"
        in rows
    )
    assert (
        "| raw, redis | json | 15.0 | - | 8.0 | - | - | 0.0 | 0.5 | 1.20 of 2 |" in rows
    )
