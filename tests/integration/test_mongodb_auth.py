"""readside against a MongoDB server that checks its users' passwords.

The stack's FerretDB passes a client that logs in (``authMechanism=PLAIN``)
on to its PostgreSQL as that role, which checks the password
(``pipeline.stack.ferretdb``); every test's MongoDB sink logs in as the
backend's MongoDB role. Here: the worker's documents are written as that
role (it owns the schema FerretDB made for the sink's database, and the
backend's sessions show it), and a wrong password stops the sink with a
clear error that shows no password.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import psycopg
import pytest

from connectors.mongodb import MongoSinkConfig
from connectors.mongodb.sink import MongoSink
from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack.ferretdb import MONGO_ROLE, FerretBackend
from pipeline.stack.postgres import superuser_dsn

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);"
VIEWS: dict[str, Any] = {"items": {"table": "public.items", "sinks": ["mongodb"]}}


def _backend(stack: StackConfig) -> str:
    port = stack.ferretdb_backend_port
    return superuser_dsn(Path(stack.data_dir), port, FerretBackend.name)


def test_worker_writes_as_the_mongodb_role(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    sink_cfg = p.config.sinks["mongodb"]
    assert isinstance(sink_cfg, MongoSinkConfig)
    uri = sink_cfg.uri.get_secret_value()
    assert urllib.parse.urlsplit(uri).username == MONGO_ROLE
    assert "authMechanism=PLAIN" in uri
    p.sql("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g")
    p.apply_connector()
    worker = p.start_worker()
    p.sql("UPDATE items SET name = name || '!' WHERE id % 4 = 0")
    p.sql("DELETE FROM items WHERE id = 3")
    p.wait_drained()
    p.assert_converged()  # verify reads the sink as the role too
    with psycopg.connect(_backend(stack), autocommit=True) as conn:
        owner = conn.execute(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = %s",
            (sink_cfg.database,),
        ).fetchone()
        sessions = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (MONGO_ROLE,)
        ).fetchone()
    assert owner == (MONGO_ROLE,)  # FerretDB made the database as the role
    assert sessions is not None
    assert sessions[0] > 0  # the running worker's
    assert worker.terminate() == 0


def test_wrong_password_stops_the_sink_with_a_clear_error(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, ["public.items"], VIEWS)
    good = p.config.sinks["mongodb"]
    assert isinstance(good, MongoSinkConfig)
    parts = urllib.parse.urlsplit(good.uri.get_secret_value())
    wrong = "not-the-password-x9"
    netloc = f"{MONGO_ROLE}:{wrong}@{parts.hostname}:{parts.port}"

    def mutate(data: dict[str, Any]) -> None:
        data["sinks"]["mongodb"]["uri"] = urllib.parse.urlunsplit(
            parts._replace(netloc=netloc)
        )

    p.rewrite(mutate)
    try:
        _refused(p, wrong)
    finally:  # the teardown drops the test's database as the role
        p.rewrite(
            lambda d: d["sinks"]["mongodb"].update(uri=good.uri.get_secret_value())
        )


def _refused(p: Any, wrong: str) -> None:
    cfg = p.config.sinks["mongodb"]
    assert isinstance(cfg, MongoSinkConfig)
    sink = MongoSink("mongodb", cfg, {})
    with pytest.raises(FatalError) as refused:
        sink.open()
    sink.close()
    # MongoDB answers "Authentication failed." (code 18); FerretDB passes on
    # PostgreSQL's "password authentication failed": fatal either way
    assert "authentication failed" in str(refused.value).lower(), refused.value
    assert wrong not in str(refused.value)

    worker = p.start_worker()
    text = worker.refused(60, "the worker with a wrong MongoDB password to exit", wrong)
    assert "authentication failed" in text.lower(), worker.tail()
