"""readside against the stack's secured OpenSearch node (security plugin:
HTTPS with the stack's certificate, HTTP basic authentication against its
internal users; ``pipeline.stack.opensearch_security``).

A wrong password (or none) and a server certificate the sink does not trust
are refused when the sink opens, before it writes anything, with a fatal
error that names the cause and shows no password, and a worker with such a
sink stops (exit 2); ``verify: false`` is refused without TLS and, over
HTTPS, connects with a warning in the log.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from harness import opensearch_client, opensearch_sink
from pydantic import ValidationError

from connectors.base import ViewTarget
from connectors.opensearch import OpenSearchSinkConfig
from connectors.opensearch.sink import OpenSearchSink
from pipeline.errors import FatalError
from pipeline.events import Upsert
from pipeline.stack import tls

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["opensearch"]}}
WRONG = "not-the-password-q7"


def _sink(**settings: Any) -> tuple[OpenSearchSink, str]:
    """A sink of one view on a fresh index, with the stack's settings and
    ``settings`` over them (a ``None`` removes one)."""
    merged = {**opensearch_sink(), **settings}
    merged = {k: v for k, v in merged.items() if v is not None}
    cfg = OpenSearchSinkConfig(type="opensearch", index_prefix="rs-auth-", **merged)
    name = f"auth-{uuid.uuid4().hex[:10]}"
    return OpenSearchSink("os-auth", cfg, {"v": ViewTarget("v", name)}), name


def _no_index(pattern: str) -> None:
    """No index matches ``pattern`` (a wildcard: HEAD would answer 200)."""
    client = opensearch_client()
    try:
        assert client.request("GET", f"/{pattern}") == {}
    finally:
        client.close()


def _nothing_written(name: str) -> None:
    _no_index(f"rs-auth-{name}*")


@pytest.mark.parametrize(
    "login",
    [
        {"password": WRONG},
        {"username": "nobody", "password": WRONG},
        {"password": None},
    ],
    ids=["wrong-password", "unknown-user", "no-credentials"],
)
def test_bad_login_is_refused_before_any_write(login: dict[str, Any]) -> None:
    if login.get("password") is None:
        login = {"username": None, "password": None}
    sink, name = _sink(**login)
    start = time.monotonic()
    with pytest.raises(FatalError) as refused:
        sink.open()
    sink.close()
    message = str(refused.value)
    assert "opensearch: not authorized (401)" in message, message
    assert WRONG not in message
    assert time.monotonic() - start < 10  # no retries
    _nothing_written(name)


@pytest.mark.parametrize("ca", ["another-ca", "system-cas"])
def test_untrusted_certificate_is_refused_before_any_write(
    ca: str, tmp_path: Path
) -> None:
    # a CA of its own, which never signed the node's certificate; or none
    # given: the system's CAs, which did not either
    other = tls.issue(tmp_path / "other").ca if ca == "another-ca" else None
    sink, name = _sink(ca_cert=other)
    if other is None:
        assert sink.cfg.ca_cert is None
    start = time.monotonic()
    with pytest.raises(FatalError) as refused:
        sink.open()
    sink.close()
    message = str(refused.value)
    assert "the server's TLS certificate is not trusted" in message, message
    assert "ca_cert" in message
    assert time.monotonic() - start < 10  # not retried as an outage
    _nothing_written(name)


def test_verification_off_refused_without_tls_and_warned_over_https(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plain = opensearch_sink()["hosts"][0].replace("https://", "http://")
    with pytest.raises(ValidationError, match="verify: TLS is off"):
        OpenSearchSinkConfig(type="opensearch", hosts=[plain], verify=False)
    # over HTTPS: the certificate unchecked (no CA given), the login checked
    sink, _name = _sink(verify=False, ca_cert=None)
    with caplog.at_level(logging.WARNING):
        sink.open()
    try:
        assert sink.write([Upsert("v", "1", 1, {"a": 1})]).applied == 1
        assert "verify: false" in caplog.text
        assert "not checked" in caplog.text
    finally:
        sink.drop("v")
        sink.close()


def test_worker_with_a_wrong_password_stops(make_pipeline: Any) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    good = p.config.sinks["opensearch"]
    assert isinstance(good, OpenSearchSinkConfig)
    assert good.password is not None
    p.rewrite(lambda d: d["sinks"]["opensearch"].update(password=WRONG))
    try:
        p.sql("INSERT INTO items VALUES (1, 'one')")
        p.apply_connector()
        worker = p.start_worker()
        text = worker.refused(
            60, "the worker with a wrong OpenSearch password to exit", WRONG
        )
        assert "not authorized (401)" in text, worker.tail()
        _no_index(f"it-{p.suffix}-*")
    finally:  # the teardown drops the test's indexes as the right user
        password = good.password.get_secret_value()
        p.rewrite(lambda d: d["sinks"]["opensearch"].update(password=password))
