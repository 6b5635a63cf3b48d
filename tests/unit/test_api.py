"""The HTTP API refuses bad requests before any store call, and the pieces
of read-your-writes that need no services: LSN text, the watermark's
bookkeeping, the 412 answer.

Stores and Kafka point at a closed port and the app's lifespan never runs, so
a request that reached a store would fail with 5xx, not the 4xx asserted.
"""

from __future__ import annotations

import base64
from collections import deque
from typing import Any

import pytest
from confluent_kafka import KafkaException
from fastapi.testclient import TestClient

from pipeline.config import parse
from pipeline.errors import ConfigError
from query import failures
from query.errors import QueryError
from query.lsn import format_lsn
from query.lsn import parse as parse_lsn
from query.server import create_app
from query.service import Service
from query.watermark import Sample, WatermarkTracker

pytestmark = pytest.mark.unit

CLOSED = "127.0.0.1:9"
KEY = "k" * 20


def config(**api: Any) -> Any:
    return parse(
        {
            "source": {"dsn": f"postgresql://x@{CLOSED}/x", "tables": ["public.t"]},
            "kafka": {"bootstrap_servers": CLOSED},
            "connect": {"url": f"http://{CLOSED}"},
            "sinks": {
                "redis": {"type": "redis", "url": f"redis://{CLOSED}/0"},
                "es": {"type": "elasticsearch", "hosts": [f"http://{CLOSED}"]},
            },
            "views": {
                "t": {"table": "public.t", "sinks": ["redis", "es"]},
                "u": {"table": "public.t", "sinks": ["redis"]},
            },
            "api": api,
        }
    )


@pytest.fixture
def http() -> Any:
    cfg = config(
        keys=[{"name": "site", "key": KEY, "views": ["t"]}], min_lsn_wait_s=0.2
    )
    return TestClient(create_app(cfg), headers={"Authorization": f"Bearer {KEY}"})


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "reason"),
    [
        ("POST", "/t/filter", {"json": {"where": {"$where": "1"}}}, "field"),
        ("POST", "/t/filter", {"json": {"where": {"a": {"$gt": 1}}}}, "operator"),
        ("POST", "/t/filter", {"json": {"where": {"a": 1}, "limit": 101}}, "size"),
        ("POST", "/t/filter", {"json": {"where": {"a": 1}, "x": 1}}, "request"),
        ("POST", "/t/search", {"json": {"script": "1"}}, "request"),
        ("POST", "/t/search", {"json": {"sort": ["_script"]}}, "field"),
        ("GET", "/t/search", {"params": {"size": 101}}, "size"),
        ("GET", "/t/search", {"params": {"script": "x"}}, "parameter"),
        ("GET", "/t/search", {"params": {"range": "price:gte"}}, "filters"),
        ("GET", "/t/search", {"params": {"range": "price:near:1"}}, "operator"),
        ("GET", "/t/search", {"params": {"range": "day:lt:soon"}}, "value"),
        (
            "POST",
            "/t/search",
            {"json": {"filters": {"a": {"gte": "2024-99-01"}}}},
            "value",
        ),
        ("POST", "/t/filter", {"json": {"where": {"a": 1}, "sort": ["_x"]}}, "field"),
        # ids are any text the stores hold (a*b, ?), without control characters
        ("GET", "/t/docs/a%01b", {}, "ids"),
        ("GET", "/t/docs", {"params": {"ids": ["\n"]}}, "ids"),
        ("POST", "/t/mget", {"json": {"ids": [[1]]}}, "ids"),
        ("GET", "/t/docs/1", {"params": {"min_lsn": "1/2/3"}}, "min_lsn"),
    ],
)
def test_api_bad_request_refused_with_reason(http, method, path, kwargs, reason):
    resp = http.request(method, "/v1/views" + path, **kwargs)
    assert resp.status_code == 400, resp.text
    assert resp.json()["reason"] == reason
    assert resp.json()["error"]


def test_api_body_over_the_limit_answers_413_before_any_store_call():
    cfg = config(keys=[{"name": "site", "key": KEY, "views": ["t"]}])
    http = TestClient(create_app(cfg), headers={"Authorization": f"Bearer {KEY}"})
    limit = cfg.api.max_body_bytes
    ids = [str(i) for i in range(limit // 4)]  # far above the limit as JSON
    resp = http.post("/v1/views/t/mget", json={"ids": ids})
    assert resp.status_code == 413, resp.text
    assert resp.json()["reason"] == "size"
    assert "api.max_body_bytes" in resp.json()["error"]

    def chunks():  # no declared length: refused once the bytes pass it
        yield b'{"ids": ["'
        for _ in range(limit // 1000 + 2):
            yield b"x" * 1000
        yield b'"]}'

    resp = http.post(
        "/v1/views/t/mget",
        content=chunks(),
        headers={"Content-Type": "application/json"},
    )
    assert resp.status_code == 413, resp.text
    assert resp.json()["reason"] == "size"


def test_api_keys_missing_wrong_or_other_view_refused(http):
    anon = TestClient(http.app)
    assert anon.get("/v1/views/t/docs/1").status_code == 401
    wrong = anon.get("/v1/views/t/docs/1", headers={"X-Api-Key": "x" * 20})
    assert wrong.status_code == 401
    assert http.get("/v1/views/u/docs/1").status_code == 403
    assert http.get("/v1/views/nope/docs/1").json()["reason"] == "view"
    assert anon.get("/healthz").status_code == 200


def test_api_key_checked_before_parameters_and_body(http):
    anon = TestClient(http.app)
    assert anon.get("/v1/views/t/docs").status_code == 401  # no ids either
    junk = {"json": {"bogus": {"$where": "1"}}}
    assert anon.post("/v1/views/t/mget", **junk).status_code == 401
    assert anon.post("/v1/views/t/filter", content=b"{").status_code == 401
    assert http.post("/v1/views/u/search", **junk).status_code == 403
    assert http.get("/v1/views/u/docs").status_code == 403


def test_api_unknown_view_names_only_the_views_of_the_key(http):
    resp = http.get("/v1/views/nope/docs", params={"ids": "1"})
    assert resp.status_code == 404
    assert "(known: t)" in resp.json()["error"]


def test_api_without_keys_refuses_to_start_unless_anonymous_is_set():
    with pytest.raises(ConfigError, match=r"api\.keys"):
        create_app(config())
    anon = TestClient(create_app(config(anonymous=True)))
    assert anon.get("/v1/views/t/docs/1", params={"min_lsn": "x"}).status_code == 400
    assert anon.get("/metrics").status_code == 200  # a trusted network


def test_api_operator_routes_need_an_operator_key():
    op = "o" * 20
    cfg = config(
        keys=[
            {"name": "site", "key": KEY, "views": ["t"]},
            {"name": "ops", "key": op, "operator": True},
        ]
    )
    anon = TestClient(create_app(cfg))
    for path in ("/metrics", "/v1/status", "/status"):
        resp = anon.get(path)
        assert resp.status_code == 401, path
        # a browser asks for the key (as the password of Basic credentials)
        assert resp.headers["WWW-Authenticate"].startswith("Basic"), path
        site = anon.get(path, headers={"Authorization": f"Bearer {KEY}"})
        assert site.status_code == 403, path
    assert anon.get("/metrics", headers={"X-Api-Key": op}).status_code == 200
    basic = base64.b64encode(f"anyone:{op}".encode()).decode()
    resp = anon.get("/metrics", headers={"Authorization": f"Basic {basic}"})
    assert resp.status_code == 200
    # the operator key reads no view it was not given
    resp = anon.get("/v1/views/t/docs/1", headers={"X-Api-Key": op})
    assert resp.status_code == 403
    assert anon.get("/healthz").status_code == 200


def test_api_key_without_views_or_operator_refused():
    with pytest.raises(ConfigError, match="views, operator"):
        config(keys=[{"name": "none", "key": KEY}])


def test_api_min_lsn_never_reached_answers_412_with_watermark(http):
    resp = http.get("/v1/views/t/docs/1", params={"min_lsn": "0/16B3748"})
    assert resp.status_code == 412
    assert resp.json()["min_lsn"] == "0/16B3748"
    assert resp.json()["watermark_lsn"] is None


def test_api_openapi_schema_lists_read_routes(http):
    paths = http.get("/openapi.json").json()["paths"]
    for route in ("docs/{doc_id}", "docs", "mget", "search", "filter"):
        assert f"/v1/views/{{view}}/{route}" in paths


def test_api_config_key_for_unknown_view_refused():
    cfg = config(keys=[{"name": "site", "key": KEY, "views": ["nope"]}])
    with pytest.raises(ConfigError, match="nope"):
        Service(cfg)


def test_api_config_short_or_duplicate_keys_refused():
    with pytest.raises(ConfigError, match="16 characters"):
        config(keys=[{"name": "a", "key": "short", "views": ["t"]}])
    with pytest.raises(ConfigError, match="same secret"):
        config(
            keys=[
                {"name": "a", "key": KEY, "views": ["t"]},
                {"name": "b", "key": KEY, "views": ["u"]},
            ]
        )


@pytest.mark.parametrize(
    ("text", "number"),
    [("0/16B3748", 0x16B3748), ("16/B374D848", 0x16B374D848), ("123", 123), (7, 7)],
)
def test_lsn_text_or_int_parsed_and_formatted_back(text, number):
    assert parse_lsn(text) == number
    assert parse_lsn(format_lsn(number)) == number


@pytest.mark.parametrize("text", ["\u00b2", "\u0661\u0662", "\uff11", "1/2/3", ""])
def test_lsn_other_than_ascii_hex_or_decimal_refused(text):
    with pytest.raises(QueryError) as info:
        parse_lsn(text)
    assert info.value.reason == "min_lsn"


def test_watermark_sample_waits_for_every_partition_then_advances():
    tracker = WatermarkTracker(config())
    topic = tracker.topics["t"][0]
    key = ("t", topic)  # marks are kept per view and topic
    pending: deque[Sample] = deque()
    a, b = (topic, 0), (topic, 1)
    # sample 1: slot at 100, ends (10, 5); the workers committed (10, 4)
    tracker._advance(key, pending, 100, {a: 10, b: 5}, {a: 10, b: 4}, {})
    assert tracker._marks.get(key) is None
    # sample 2: slot at 200, ends (12, 9); partition b reached 5 only
    tracker._advance(key, pending, 200, {a: 12, b: 9}, {a: 12, b: 5}, {})
    assert tracker._marks[key] == 100
    assert [s.lsn for s in pending] == [200]
    # no new slot position: the pending sample still advances the mark
    tracker._advance(key, pending, None, {a: 12, b: 9}, {a: 12, b: 9}, {})
    assert tracker._marks[key] == 200
    assert not pending


def test_failing_samples_log_one_traceback_then_a_line_a_minute(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A source or broker down while requests wait (a sample every 20 ms)
    must not write a traceback per sample."""
    tracker = WatermarkTracker(config())
    clock = [1000.0]
    monkeypatch.setattr(failures.time, "monotonic", lambda: clock[0])
    down = [True]

    def sample() -> None:
        if down[0]:
            raise OSError("connection refused")

    monkeypatch.setattr(tracker, "_sample", sample)
    caplog.set_level("INFO", logger="query.watermark")
    for _ in range(300):  # six seconds of samples every 20 ms
        clock[0] += 0.02
        tracker.refresh(0.0)
    first = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(first) == 1
    assert first[0].exc_info is not None
    assert tracker.failures.count == 300
    clock[0] += failures.INTERVAL_S
    tracker.refresh(0.0)
    later = [r for r in caplog.records if r.levelname == "WARNING"][1:]
    assert [r.getMessage() for r in later] == [
        "watermark sample still failing: 301 in a row, the last: "
        "OSError: connection refused"
    ]
    assert later[0].exc_info is None
    down[0] = False
    clock[0] += 0.02
    tracker.refresh(0.0)
    assert tracker.failures.count == 0
    assert caplog.records[-1].getMessage() == (
        "watermark sample succeeded again after 301 failures"
    )
    # the next failure starts a new run: its traceback is logged again
    down[0] = True
    clock[0] += 0.02
    tracker.refresh(0.0)
    assert caplog.records[-1].exc_info is not None


def test_watermark_partition_without_commit_blocks_the_sample():
    tracker = WatermarkTracker(config())
    topic = tracker.topics["t"][0]
    key = ("t", topic)  # marks are kept per view and topic
    pending: deque[Sample] = deque()
    tracker._advance(key, pending, 50, {(topic, 0): 3}, {}, {})
    assert tracker._marks.get(key) is None
    assert len(pending) == 1


class _StuckOffsets:
    """AppliedOffsets whose admin client is never answered on ``stuck`` (an
    ask librdkafka's client sent after a broker restart); counts the drops."""

    def __init__(self, stuck: str) -> None:
        self.stuck = stuck
        self.dropped = 0
        self.admin = self

    def drop_admin(self) -> None:
        self.dropped += 1

    def describe_topics(self, topics: Any, **_kw: Any) -> dict[str, Any]:
        if self.stuck == "describe_topics":
            raise KafkaException("_TIMED_OUT")
        return {}

    def list_offsets(self, wanted: Any, **_kw: Any) -> dict[Any, Any]:
        if self.stuck == "list_offsets":
            raise KafkaException("_TIMED_OUT")
        return {}

    def applied(self, parts: Any) -> Any:
        if self.stuck == "applied":
            raise TimeoutError()
        return {"t": {}, "u": {}}, {"t": {}, "u": {}}


@pytest.mark.parametrize("stuck", ["describe_topics", "list_offsets", "applied"])
def test_a_sample_the_broker_left_unanswered_leaves_its_admin_client(
    monkeypatch: pytest.MonkeyPatch, stuck: str
) -> None:
    """A full suite's run found the watermark standing still for two minutes
    after a broker restart: its samples timed out listing the groups, and
    only a timeout on the groups' offsets had made a new admin client."""
    tracker = WatermarkTracker(config())
    monkeypatch.setattr(tracker, "_slot_lsn", lambda: 100)
    offsets = _StuckOffsets(stuck)
    tracker._offsets = offsets  # type: ignore[assignment]
    tracker.refresh(0.0)
    assert (tracker.failures.count, offsets.dropped) == (1, 1)
    offsets.stuck = ""
    tracker.refresh(0.0)
    assert (tracker.failures.count, offsets.dropped) == (0, 1)


def test_a_sample_the_source_failed_keeps_the_admin_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tracker = WatermarkTracker(config())

    def down() -> int:
        raise OSError("connection refused")

    monkeypatch.setattr(tracker, "_slot_lsn", down)
    offsets = _StuckOffsets("")
    tracker._offsets = offsets  # type: ignore[assignment]
    tracker.refresh(0.0)
    assert (tracker.failures.count, offsets.dropped) == (1, 0)
