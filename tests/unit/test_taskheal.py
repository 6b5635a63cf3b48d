"""A connector task failed on the schema registry or the source, restarted
once that service answers (pipeline.taskheal); ``SchemaRegistry.answers`` on
a real HTTP server. tests/integration/test_avro.py fails the task on the
stack on the registry (a table altered while the registry is down),
tests/integration/test_source_outage.py on the source."""

from __future__ import annotations

import http.server
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from repo_config import repo_config_path

from connectors.debezium import failed_on_registry, failed_on_source
from pipeline import config
from pipeline.errors import TransientError
from pipeline.source.registry import SchemaRegistry
from pipeline.status import render
from pipeline.taskheal import (
    CHECK_INTERVAL_S,
    CONNECT_DOWN_S,
    REGISTRY_DOWN_S,
    REPEAT_S,
    Cause,
    Watch,
    Watches,
    watches,
)

pytestmark = pytest.mark.unit

#: the head of the trace Connect keeps for a task Apicurio's converter failed
REGISTRY_TRACE = (
    "org.apache.kafka.connect.errors.ConnectException: Tolerance exceeded in "
    "error handler\n\tat org.apache.kafka.connect.runtime.errors.Retry...\n"
    "Caused by: io.apicurio.registry.rest.client.exception.RestClientException\n"
    "\tat io.apicurio.registry.rest.client.impl.ErrorHandler.parseError(...)"
)
OTHER_TRACE = "io.debezium.DebeziumException: replication slot position gone"


class Connect:
    """Connect's REST API as the watch asks it: a status, the restarts asked."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.asked: list[tuple[str, str]] = []
        self.down = False

    def request(self, method: str, path: str, body: Any = None) -> Any:
        if self.down:
            raise TransientError("connect: connection refused")
        self.asked.append((method, path))
        if method == "GET":
            return {"connector": {"state": "RUNNING"}, "tasks": self.tasks}
        return None

    def restarts(self) -> list[str]:
        return [path for method, path in self.asked if method == "POST"]


def _task(state: str, trace: str = "") -> dict[str, Any]:
    return {"id": 0, "state": state, "worker_id": "w", "trace": trace}


@pytest.fixture
def cfg() -> config.Config:
    return config.load(repo_config_path(), env={})


def _watch(
    cfg: config.Config, connect: Connect, up: list[bool], now: list[float]
) -> Watch:
    cause = Cause(
        "the schema registry", failed_on_registry, lambda: up[0], REGISTRY_DOWN_S
    )
    return Watch(cfg, cause, lambda: now[0], connect)  # type: ignore[arg-type]


def _failed(
    cfg: config.Config, caplog: pytest.LogCaptureFixture, up: bool
) -> tuple[Connect, list[bool], list[float], Watch]:
    """A watch of a connector whose task the registry failed: Connect, whether
    the registry answers, the clock, the watch."""
    caplog.set_level(logging.WARNING, logger="pipeline.taskheal")
    connect, answers, now = Connect([_task("FAILED", REGISTRY_TRACE)]), [up], [0.0]
    return connect, answers, now, _watch(cfg, connect, answers, now)


def test_failed_on_registry_names_only_tasks_the_registry_client_failed() -> None:
    status = {
        "tasks": [
            {**_task("FAILED", REGISTRY_TRACE), "id": 0},
            {**_task("FAILED", OTHER_TRACE), "id": 1},
            {**_task("RUNNING", REGISTRY_TRACE), "id": 2},
        ]
    }
    assert failed_on_registry(status) == [0]
    assert failed_on_registry({}) == []


def test_a_task_failed_on_the_registry_is_restarted_once_it_answers(
    cfg: config.Config, caplog: pytest.LogCaptureFixture
) -> None:
    connect, up, now, watch = _failed(cfg, caplog, up=False)
    assert watch.due()
    watch.check()
    assert connect.restarts() == []  # the registry does not answer yet
    assert (
        "failed on the schema registry, which does not answer; restarted once it "
        "does" in caplog.text
    )
    now[0] += CHECK_INTERVAL_S
    assert not watch.due()  # a registry that hangs would hold the loop each look
    now[0] = REGISTRY_DOWN_S
    assert watch.due()
    watch.check()  # still down: said once per REPEAT_S
    assert caplog.text.count("does not answer") == 1
    up[0] = True
    now[0] += REGISTRY_DOWN_S
    watch.check()
    name = cfg.connect.connector
    assert connect.restarts() == [
        f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true"
    ]
    assert "answers again: restarted" in caplog.text


def test_a_registry_down_long_is_said_again_every_repeat(
    cfg: config.Config, caplog: pytest.LogCaptureFixture
) -> None:
    connect, _up, now, watch = _failed(cfg, caplog, up=False)
    watch.check()
    now[0] += REPEAT_S
    watch.check()
    assert caplog.text.count("does not answer") == 2
    assert connect.restarts() == []


def test_running_tasks_and_tasks_failed_otherwise_are_left_alone(
    cfg: config.Config,
) -> None:
    for tasks in ([_task("RUNNING")], [_task("FAILED", OTHER_TRACE)], []):
        connect, up, now = Connect(tasks), [True], [0.0]
        _watch(cfg, connect, up, now).check()
        assert connect.restarts() == []


def test_a_connect_that_does_not_answer_is_asked_again_a_minute_later(
    cfg: config.Config,
) -> None:
    connect, up, now = Connect([_task("FAILED", REGISTRY_TRACE)]), [True], [0.0]
    connect.down = True
    watch = _watch(cfg, connect, up, now)
    watch.check()  # no exception: the worker goes on
    connect.down = False
    now[0] += CHECK_INTERVAL_S
    assert not watch.due()  # a hung Connect would hold the loop each look
    now[0] = CONNECT_DOWN_S
    assert watch.due()
    watch.check()
    assert len(connect.restarts()) == 1


@pytest.fixture
def registry() -> Iterator[tuple[str, list[int]]]:
    """A local HTTP server answering each request with the next status of
    its list (200 when none is left): its base URL and that list."""
    statuses: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            code = statuses.pop(0) if statuses else 200
            body = b'["AVRO"]' if code == 200 else b"{}"
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", statuses
    finally:
        server.shutdown()
        server.server_close()


def test_the_registry_answers_unless_refused_or_a_server_error(
    registry: tuple[str, list[int]],
) -> None:
    url, statuses = registry
    client = SchemaRegistry(url)
    assert client.answers()
    statuses.append(401)  # a refused login: it answers (a config error)
    assert client.answers()
    statuses.append(503)  # starting, or broken
    assert not client.answers()
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), None) as closed:  # type: ignore[arg-type]
        port = closed.server_address[1]
    assert not SchemaRegistry(f"http://127.0.0.1:{port}").answers(timeout_s=1.0)


def test_a_task_that_fails_again_at_once_is_restarted_less_and_less_often(
    cfg: config.Config,
) -> None:
    connect, up, now = Connect([_task("FAILED", REGISTRY_TRACE)]), [True], [0.0]
    watch = _watch(cfg, connect, up, now)
    waits = []
    for _ in range(8):
        watch.check()
        start = now[0]
        while not watch.due():
            now[0] += 1.0
        waits.append(now[0] - start)
    assert len(connect.restarts()) == 8
    assert waits == [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]
    connect.tasks = [_task("RUNNING")]
    watch.check()  # running again: the next failure starts afresh
    connect.tasks = [_task("FAILED", REGISTRY_TRACE)]
    now[0] += CHECK_INTERVAL_S
    watch.check()
    assert not watch.due()
    now[0] += CHECK_INTERVAL_S
    assert watch.due()


def _status_text(task: dict[str, Any]) -> str:
    """``readside status`` of a connector whose one task is ``task``."""
    return render(
        {
            "views": [],
            "slot_lag_bytes": 0,
            "capture_warnings": [],
            "dead_letters": 0,
            "connector": {
                "connector": "shop-postgres",
                "state": "RUNNING",
                "tasks": [{"id": 0, "state": "FAILED", **task}],
            },
        }
    )


def test_status_says_the_workers_restart_a_task_the_registry_failed() -> None:
    said = "the workers restart it once the registry answers"
    task = {"trace": REGISTRY_TRACE}
    assert said in _status_text({**task, "on_registry": True})
    assert "the workers restart it" not in _status_text({**task, "on_registry": False})


#: the trace Connect kept for a task whose start the source refused (its
#: second connection: a role out of connection slots), cut
SOURCE_TRACE = (
    "io.debezium.DebeziumException: Couldn't get timestamp utils from "
    "underlying connection\n\tat io.debezium.connector.postgresql.connection."
    "PostgresConnection.getTimestampUtils(PostgresConnection.java:637)\n"
    "Caused by: org.postgresql.util.PSQLException: FATAL: too many connections "
    'for role "rs_capture"\n\tat org.postgresql.core.v3.ConnectionFactoryImpl'
)
#: a start cut by a PostgreSQL shutting down, as a fault run met it
SHUTDOWN_TRACE = (
    "io.debezium.DebeziumException: Failed to create TypeRegistry\n"
    "Caused by: io.debezium.DebeziumException: Couldn't initialize type registry\n"
    "Caused by: org.postgresql.util.PSQLException: The connection attempt failed.\n"
    "Caused by: java.io.EOFException"
)
POSITION_TRACE = (
    "io.debezium.DebeziumException: Caused by: org.postgresql.util.PSQLException: "
    "ERROR: requested WAL segment 000000010000000000000002 has already been "
    "removed: the position is no longer available on the server"
)


def test_failed_on_source_names_tasks_a_refused_or_cut_connection_failed() -> None:
    status = {
        "tasks": [
            {**_task("FAILED", SOURCE_TRACE), "id": 0},
            {**_task("FAILED", SHUTDOWN_TRACE), "id": 1},
            {**_task("FAILED", REGISTRY_TRACE), "id": 2},
            {**_task("FAILED", POSITION_TRACE), "id": 3},
            {**_task("FAILED", OTHER_TRACE), "id": 4},
            {**_task("RUNNING", SOURCE_TRACE), "id": 5},
        ]
    }
    assert failed_on_source(status) == [0, 1]
    assert failed_on_source({}) == []


def test_a_worker_watches_the_source_always_and_the_registry_for_avro(
    cfg: config.Config,
) -> None:
    assert [w.cause.name for w in watches(cfg).watches] == ["the source database"]
    avro = cfg.model_copy(
        update={"kafka": cfg.kafka.model_copy(update={"format": "avro"})}
    )
    assert [w.cause.name for w in watches(avro).watches] == [
        "the source database",
        "the schema registry",
    ]


def test_the_source_does_not_answer_on_a_closed_port(cfg: config.Config) -> None:
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), None) as closed:  # type: ignore[arg-type]
        port = closed.server_address[1]
    dsn = f"postgresql://nobody@127.0.0.1:{port}/nothing"
    down = cfg.model_copy(
        update={"source": cfg.source.model_copy(update={"dsn": SecretStr(dsn)})}
    )
    assert Cause.source(down).answers() is False


def test_status_says_the_workers_restart_a_task_the_source_failed() -> None:
    text = _status_text({"trace": SOURCE_TRACE, "on_source": True})
    assert "the workers restart it once the source answers" in text


def test_the_watches_of_a_worker_share_one_look_at_connect(
    cfg: config.Config,
) -> None:
    connect, now = Connect([_task("FAILED", REGISTRY_TRACE)]), [0.0]
    source = Cause("the source database", failed_on_source, lambda: True, 10.0)
    both = Watches(
        [
            _watch(cfg, connect, [True], now),
            Watch(cfg, source, lambda: now[0], connect),  # type: ignore[arg-type]
        ]
    )
    assert both.due()
    both.check()
    # one status for both causes; the registry's failed task restarted
    assert [m for m, _path in connect.asked] == ["GET", "POST"]
    assert not both.due()
    connect.down = True
    now[0] += CHECK_INTERVAL_S
    both.check()  # Connect down: both look again a minute later, not before
    now[0] += CHECK_INTERVAL_S
    assert not both.due()
    now[0] += CONNECT_DOWN_S
    assert both.due()
