"""``readside serve`` with ``api.workers: 2``: two server processes on one
port. Each answers exactly what the source defines, ``/metrics`` from
either counts the requests of both, a process killed outright is replaced
and its requests stay counted, and SIGTERM stops them all."""

from __future__ import annotations

import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from apiserver import Server, start_server

from pipeline.verify import expected_documents
from pipeline.views import build_views
from query.server import sweep_metric_dirs

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL, price integer);
INSERT INTO products SELECT i, 'widget ' || i, i * 10 FROM generate_series(1, 30) AS i;
"""
VIEW = "products"
KEY = "storefront-key-0123456789"
OPS = "ops-" + "o" * 20
GET_BY_ID = re.compile(
    r"^readside_api_request_seconds_count"
    r'\{route="/v1/views/\{view\}/docs/\{doc_id\}"\} ([0-9.e+]+)$',
    re.MULTILINE,
)


def _children(pid: int) -> list[int]:
    """The processes ``pid`` started (its server processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # the parent pid is the second field after the command's parentheses
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _server_processes(server: Server) -> list[int]:
    """The supervisor's server processes (spawned by multiprocessing; not
    its resource tracker)."""
    pids = []
    for pid in _children(server.proc.pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            pids.append(pid)
    return pids


def _read_all(server: Server, ids: list[str], expected: dict[str, Any]) -> None:
    """Get every id on a connection of its own, each answer exact."""
    headers = {"Authorization": f"Bearer {KEY}"}
    for ident in ids:
        # a new connection per read, so that any process may take it
        got = httpx.get(
            f"{server.base}/v1/views/{VIEW}/docs/{ident}", headers=headers, timeout=10
        )
        assert got.status_code == 200, got.text
        assert got.json()["doc"] == expected[ident]


def _gets_counted(server: Server) -> float:
    with server.client(headers={"Authorization": f"Bearer {OPS}"}) as http:
        got = http.get("/metrics")
    assert got.status_code == 200, got.text
    found = GET_BY_ID.search(got.text)
    assert found is not None, got.text[:2000]
    return float(found.group(1))


def _served(make_pipeline, change: str | None = None) -> tuple[dict[str, Any], Server]:
    """The products view drained into its store, what the source says of it,
    and ``readside serve`` in two processes with a site's and an operator's
    key."""
    p = make_pipeline(SCHEMA, ["public.products"], {VIEW: {"table": "public.products"}})
    p.apply_connector()
    p.start_worker()
    if change is not None:
        p.sql(change)
    p.wait_drained(timeout=120)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        expected = expected_documents(conn, build_views(p.config)[VIEW])
    keys = [
        {"name": "storefront", "key": KEY, "views": [VIEW]},
        {"name": "ops", "key": OPS, "operator": True},
    ]
    return expected, start_server(p, {"keys": keys, "workers": 2})


@contextmanager
def _paused(pid: int) -> Iterator[None]:
    """Process ``pid`` stopped meanwhile: the other takes every connection."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


def test_two_server_processes_answer_exactly_and_count_together(make_pipeline):
    expected, server = _served(
        make_pipeline, "UPDATE products SET price = 7 WHERE id = 3"
    )
    assert len(expected) == 30
    try:
        pids = _server_processes(server)
        assert len(pids) == 2, (pids, server.log_text()[-3000:])
        ids = sorted(expected, key=int)
        # Each process in turn is the only one running, and its /metrics
        # counts the gets by id of both processes so far.
        for turn, paused in enumerate((pids[1], pids[0]), start=1):
            with _paused(paused):
                _read_all(server, ids, expected)
                assert _gets_counted(server) == turn * len(ids)
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-3000:]
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"server process {pid} left running"
    log = server.log_text()
    assert log.count("Application shutdown complete") == 2, log[-3000:]


def _replaced(server: Server, gone: int, timeout_s: float = 60.0) -> list[int]:
    """The server processes once the supervisor replaced ``gone``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = _server_processes(server)
        if len(pids) == 2 and gone not in pids:
            return pids
        time.sleep(0.2)
    raise AssertionError(
        f"server process {gone} was not replaced in {timeout_s:.0f}s: "
        f"{_server_processes(server)}\n{server.log_text()[-3000:]}"
    )


def _startups(server: Server, count: int, timeout_s: float = 60.0) -> None:
    """Wait until ``count`` server processes in all have started serving."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.log_text().count("Application startup complete") >= count:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {count} startups:\n{server.log_text()[-3000:]}")


def test_a_killed_server_process_is_replaced_and_its_requests_stay_counted(
    make_pipeline,
):
    expected, server = _served(make_pipeline)
    try:
        victim, other = _server_processes(server)
        ids = sorted(expected, key=int)
        with _paused(other):  # the victim takes every read
            _read_all(server, ids, expected)
        os.kill(victim, signal.SIGKILL)  # no shutdown of its own
        pids = _replaced(server, victim)
        _startups(server, 3)  # the two first ones and the newcomer
        with _paused(other):  # the newcomer alone answers, exactly,
            _read_all(server, ids, expected)
            assert _gets_counted(server) == 2 * len(ids)  # and counts the victim's
    finally:
        code = server.stop()
    assert code == 0, server.log_text()[-3000:]
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]


def _gone(pids: list[int], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not [pid for pid in pids if Path(f"/proc/{pid}").exists()]:
            return True
        time.sleep(0.2)
    return False


def test_server_processes_stop_when_their_supervisor_is_killed(make_pipeline):
    """SIGKILL of the supervisor (the OOM killer, kill -9): its server
    processes stop by themselves, each finishing as on SIGTERM, and free the
    port for the next ``readside serve``."""
    p = make_pipeline(SCHEMA, ["public.products"], {VIEW: {"table": "public.products"}})
    server = start_server(p, {"anonymous": True, "workers": 2})
    pids = _server_processes(server)
    try:
        assert len(pids) == 2, (pids, server.log_text()[-3000:])
        sup = server.proc.pid
        server.proc.kill()
        server.proc.wait(10)
        stopped = _gone(pids, 30)
    finally:
        for pid in pids:
            if Path(f"/proc/{pid}").exists():
                os.kill(pid, signal.SIGKILL)
    log = server.log_text()
    assert stopped, f"server processes {pids} outlived their supervisor\n{log[-3000:]}"
    for pid in pids:
        assert f"server process {pid}: its supervisor" in log, log[-3000:]
    assert log.count("Application shutdown complete") == 2, log[-3000:]
    # its metrics directory is left behind, and the next supervisor sweeps it
    left = list(Path(tempfile.gettempdir()).glob(f"readside-api-metrics-{sup}-*"))
    assert len(left) == 1, left
    assert left[0] in sweep_metric_dirs()
    assert not left[0].exists()
    port = int(server.base.rsplit(":", 1)[1])
    with socket.socket() as sock:  # bound as readside serve binds it
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))  # no server process listens any more
