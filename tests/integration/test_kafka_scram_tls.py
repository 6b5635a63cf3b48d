"""readside against a Kafka that wants SCRAM, and over TLS.

The stack's broker takes SCRAM-SHA-256 and SCRAM-SHA-512 beside PLAIN on its
SASL_PLAINTEXT listener (``stack.kafka_sasl_port``) and on a SASL_SSL
listener (``stack.kafka_ssl_port``) that serves the stack's server
certificate; the SCRAM user lives in the cluster's metadata, set by
``stack up`` through the admin API, its password in the stack's data
directory (``pipeline.stack.kafka_users.scram_client``). Debezium writes
through the SASL_SSL listener as Connect's own SCRAM user
(``test_connect_sasl``); everything of readside's (the
worker's consumer and producer, the layout guard, ``status``, ``dlq list``,
``snapshot``'s state, the checkpoint reader, the read client's freshness
and watermark) goes through ``kafka.client``.

A wrong SCRAM password, or TLS without the stack's CA, ends the commands
and the worker at once with a clear error naming ``kafka.client``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from harness import Pipeline

from pipeline import checkpoints
from pipeline.config import StackConfig
from pipeline.stack import kafka_users
from query.client import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE authors (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE books (
    id        integer PRIMARY KEY,
    author_id integer NOT NULL REFERENCES authors(id),
    title     text NOT NULL
);
ALTER TABLE books REPLICA IDENTITY FULL;
"""
TABLES = ["public.authors", "public.books"]
VIEWS: dict[str, Any] = {
    "books": {"table": "public.books"},
    "authors": {
        "kind": "aggregate",
        "table": "public.authors",
        "embed": {
            "books": {
                "children": "public.books",
                "on": {"author_id": "id"},
                "exclude": ["author_id"],
                "order_by": ["id"],
            }
        },
    },
}
REFUSED = "refuses the security settings of kafka.client"


def secure(p: Pipeline, port: int, client: dict[str, str]) -> None:
    """Point ``p``'s every Kafka client at ``port`` with ``client``'s settings."""

    def mutate(data: dict[str, Any]) -> None:
        data["kafka"]["bootstrap_servers"] = f"127.0.0.1:{port}"
        data["kafka"]["client"] = client

    p.rewrite(mutate)
    assert p.config.kafka.secured


def fill(p: Pipeline) -> None:
    """Rows, then the connector (its initial snapshot takes them)."""
    p.sql("INSERT INTO authors SELECT g, 'author ' || g FROM generate_series(1, 20) g")
    p.sql(
        "INSERT INTO books SELECT g, 1 + g % 20, 'book ' || g "
        "FROM generate_series(1, 60) g"
    )
    p.apply_connector()


def change(p: Pipeline) -> str:
    """Updates and deletes; the LSN after them."""
    p.sql("UPDATE books SET title = title || '!' WHERE id % 4 = 0")
    p.sql("UPDATE authors SET name = upper(name) WHERE id % 3 = 0")
    p.sql("DELETE FROM books WHERE id % 9 = 0")
    lsn: str = p.sql("SELECT pg_current_wal_lsn()::text")[0][0]
    return lsn


def converges_and_reports(p: Pipeline, password: str, snapshot: bool) -> None:
    """The worker drains and converges; ``status``, the checkpoints and the
    read client's freshness answer through the secured listener; no output
    shows ``password``."""
    fill(p)
    worker = p.start_worker()
    lsn = change(p)
    p.wait_drained(timeout=180)
    p.assert_converged()
    outs = []
    if snapshot:  # an aggregate snapshot keeps its state in a Kafka topic
        outs.append(p.run_cli("snapshot", "authors"))
        p.assert_converged()

    status = p.run_cli("status", "--json")
    st = json.loads(status.stdout)
    rows = [r for r in st["views"] if r["view"] == "books"]
    assert len(rows) == 3, st
    assert all(r["consumer_lag"] == 0 and r["applied_lsn"] for r in rows), rows
    cps, mark = checkpoints.read(p.config.kafka, p.config.kafka.checkpoint_topic)
    assert {cp.view for cp in cps.values()} == {"books", "authors"}
    assert mark is not None
    with ReadClient(p.config, wait_s=60) as client:  # freshness and watermark
        answer = client.get("books", 4, min_lsn=lsn)
        assert answer.doc is not None
        assert answer.doc["title"] == "book 4!"
        assert answer.freshness.applied_lsn is not None, answer
    listed = p.run_cli("dlq", "list")
    check = p.run_cli("config", "check", "--no-sql")
    assert "sasl.password=**********" in check.stdout, check.stdout
    for out in (status, listed, check, *outs):
        assert password not in out.stdout + out.stderr
    assert password not in worker.log_text()


def test_pipeline_with_scram_sha_256_converges_reports_and_snapshots(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    client = kafka_users.scram_client(Path(stack.data_dir), "SCRAM-SHA-256")
    secure(p, stack.kafka_sasl_port, client)
    converges_and_reports(p, client["sasl.password"], snapshot=True)


def test_pipeline_over_sasl_ssl_with_scram_sha_512_and_the_stack_ca(
    make_pipeline: Any, stack: StackConfig
) -> None:
    data = Path(stack.data_dir)
    client = kafka_users.over_tls(data, kafka_users.scram_client(data, "SCRAM-SHA-512"))
    assert client["security.protocol"] == "SASL_SSL"
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    secure(p, stack.kafka_ssl_port, client)
    converges_and_reports(p, client["sasl.password"], snapshot=False)


def ends_clearly(p: Pipeline, expect: str, secret: str) -> None:
    """``status`` and ``dlq list`` exit 2 at once, as does the worker, each
    saying ``expect``, none showing ``secret``."""
    for args in (("status",), ("dlq", "list")):
        t0 = time.monotonic()
        run = p.run_cli(*args, ok=False, timeout=120)
        assert run.returncode == 2, (args, run.stdout, run.stderr)
        assert REFUSED in run.stderr, run.stderr
        assert expect in run.stderr, run.stderr
        assert p.config.kafka.bootstrap_servers in run.stderr
        assert secret not in run.stdout + run.stderr
        assert time.monotonic() - t0 < 60, args
    worker = p.start_worker()
    text = worker.refused(60, "the refused worker to exit", secret)
    assert expect in text, worker.tail()


def test_wrong_scram_password_ends_commands_and_worker_clearly(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    wrong = "not-the-scram-password-Hq27"
    client = kafka_users.scram_client(Path(stack.data_dir), "SCRAM-SHA-256")
    secure(p, stack.kafka_sasl_port, {**client, "sasl.password": wrong})
    ends_clearly(p, "SCRAM-SHA-256", wrong)


def test_tls_without_the_stack_ca_ends_commands_and_worker_clearly(
    make_pipeline: Any, stack: StackConfig
) -> None:
    data = Path(stack.data_dir)
    client = kafka_users.over_tls(data, kafka_users.scram_client(data))
    del client["ssl.ca.location"]  # the system's CAs: the stack's is not one
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    secure(p, stack.kafka_ssl_port, client)
    ends_clearly(p, "ssl.ca.location", client["sasl.password"])
