"""The formats of ``python -m bench``: JSON's decode and bare-parse rows."""

from __future__ import annotations

import json

import pytest

from bench import formats
from pipeline.sourceconfig import KafkaConfig

pytestmark = pytest.mark.unit


def test_formats_json_bare_parse_of_the_value_and_of_the_payload_alone() -> None:
    fmt = formats.build("json", "benchfmt", 50, KafkaConfig())
    assert fmt.kafka == {}  # the worker's default format
    decode = formats.measure_decode(fmt)
    assert decode["events"] == 50
    whole, payload = formats.measure_bare(fmt)
    assert whole["how"] in ("orjson.loads", "json.loads (orjson not installed)")
    assert payload["how"] == f"{whole['how']}, payload alone"
    assert payload["avg_value_bytes"] < whole["avg_value_bytes"] / 3
    for _key, value in fmt.records[:5]:
        got = json.loads(formats._payload(value))
        assert got == json.loads(value)["payload"]
