"""readside against a Kafka that wants SASL: every client goes through
``kafka.client``.

The stack's broker has a second listener, SASL_PLAINTEXT with mechanism
PLAIN (``stack.kafka_sasl_port``), whose user and password are kept in the
stack's data directory (``pipeline.stack.jvm.sasl_client``). Debezium still
writes through the PLAINTEXT listener of the same broker; everything of
readside's (the worker's consumer, its dead-letter and checkpoint producer,
the layout guard, ``status``, ``dlq list``, the checkpoint reader, the read
client's freshness, the harness) reaches Kafka through the SASL listener.

With a wrong password the commands and the worker end at once with a clear
error naming ``kafka.client``, instead of waiting for a broker that will
never take them; no output shows the password.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Pipeline

from pipeline import checkpoints, kafkaclient
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import jvm
from query.client import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (
    id   integer PRIMARY KEY,
    name text NOT NULL
);
"""
VIEWS: dict[str, Any] = {"items": {"table": "public.items"}}
REFUSED = "refuses the security settings of kafka.client"


def secure(p: Pipeline, stack: StackConfig, password: str | None = None) -> str:
    """Point ``p`` at the SASL listener with the stack's user (and
    ``password`` instead of its own, if given); the password it uses."""
    client = jvm.sasl_client(Path(stack.data_dir))
    if password is not None:
        client["sasl.password"] = password

    def mutate(data: dict[str, Any]) -> None:
        data["kafka"]["bootstrap_servers"] = f"127.0.0.1:{stack.kafka_sasl_port}"
        data["kafka"]["client"] = client

    p.rewrite(mutate)
    assert p.config.kafka.secured
    return client["sasl.password"]


def _poison(p: Pipeline) -> None:
    """A record that is not JSON in the view's topic, through the SASL listener."""
    producer = kafkaclient.producer(p.config.kafka)
    producer.produce(p.config.source.topic("public.items"), key=b"{}", value=b"\x00!")
    assert producer.flush(30) == 0


def test_pipeline_through_sasl_listener_converges_and_reports(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    password = secure(p, stack)
    p.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 40) g")
    p.apply_connector()
    worker = p.start_worker()
    p.sql("UPDATE items SET name = name || '!' WHERE id % 5 = 0")
    p.sql("DELETE FROM items WHERE id % 7 = 0")
    lsn = p.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    _poison(p)
    p.wait_drained()
    p.assert_converged()

    status = p.run_cli("status", "--json")
    st = json.loads(status.stdout)
    rows = [r for r in st["views"] if r["view"] == "items"]
    assert len(rows) == 3, st
    assert all(r["consumer_lag"] == 0 and r["applied_lsn"] for r in rows), rows
    assert st["dead_letters"] == 1

    listed = p.run_cli("dlq", "list")
    assert "reason=decode" in listed.stdout, listed.stdout
    assert len(p.dead_letters()) == 1

    cps, mark = checkpoints.read(p.config.kafka, p.config.kafka.checkpoint_topic)
    assert {cp.view for cp in cps.values()} == {"items"}
    assert mark is not None
    with ReadClient(p.config, wait_s=60) as client:  # freshness and watermark
        answer = client.get("items", 5, min_lsn=lsn)
        assert answer.doc is not None
        assert answer.doc["name"] == "item 5!"
        assert answer.freshness.applied_lsn is not None, answer

    check = p.run_cli("config", "check", "--no-sql")
    assert "sasl.password=**********" in check.stdout, check.stdout
    for out in (status, listed, check):
        assert password not in out.stdout + out.stderr
    assert password not in worker.log_text()


def test_wrong_password_ends_commands_and_worker_with_clear_error(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    wrong = "not-the-password-Zq81"
    secure(p, stack, password=wrong)

    for args in (("status",), ("dlq", "list")):
        t0 = time.monotonic()
        run = p.run_cli(*args, ok=False, timeout=120)
        took = time.monotonic() - t0
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert REFUSED in run.stderr, run.stderr
        assert f"127.0.0.1:{stack.kafka_sasl_port}" in run.stderr
        assert wrong not in run.stdout + run.stderr
        assert took < 60, (args, took)

    # in process: refused once, then remembered (a reader that looks again,
    # like the read API's freshness, is not slowed by a probe each time)
    with pytest.raises(FatalError, match=REFUSED):
        kafkaclient.verify(p.config.kafka)
    t0 = time.monotonic()
    with pytest.raises(FatalError, match=REFUSED):
        kafkaclient.consumer(p.config.kafka, {"group.id": "x"})
    assert time.monotonic() - t0 < 0.5

    worker = p.start_worker()
    text = worker.refused(60, "the worker with a wrong password to exit", wrong)
    assert REFUSED in text, worker.tail()
