"""Get by id written in one piece below ASGI (:mod:`query.wire`), on a real
uvicorn server over a socket: the same answers as the ASGI path, byte for
byte but the date, and uvicorn's connection handling kept (keep-alive,
pipelined requests, ``Connection: close``, a client that leaves).

The store is the in-memory one of ``test_api_get_by_id``; Kafka and
PostgreSQL point at a closed port.
"""

from __future__ import annotations

import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from fastapi.testclient import TestClient
from test_api_get_by_id import DOC, KEY, site_service

from connectors.memory import shared_store
from pipeline.events import Upsert
from query import wire
from query.measured import Measured
from query.server import create_app

pytestmark = pytest.mark.unit

AUTH = f"Authorization: Bearer {KEY}\r\n"


@pytest.fixture(scope="module")
def served() -> Iterator[tuple[int, Any]]:
    """A uvicorn server on a free port with :class:`wire.HttpProtocol`
    (``readside serve``'s options that matter here), and the app it serves;
    one for the module (stopping its service takes seconds)."""
    store = f"wire-{uuid.uuid4().hex[:8]}"
    cfg, svc = site_service(
        store, 1, [Upsert("t", "1", 5, DOC), Upsert("t", "a/b%c", 5, {"id": 7})]
    )
    app = create_app(cfg, svc)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            http=wire.HttpProtocol,
            log_level="warning",
            access_log=False,
            timeout_keep_alive=5,
        )
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield sock.getsockname()[1], app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        svc.stop()
        shared_store(store).data.clear()


def request(path: str, extra: str = AUTH, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode()


def read_answers(conn: socket.socket, count: int) -> list[bytes]:
    """``count`` responses (head and body, by their content-length)."""
    buf = b""
    out: list[bytes] = []
    while len(out) < count:
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            length = re.search(rb"(?im)^content-length: *(\d+)", buf[:end])
            assert length is not None, buf[:end]
            total = end + 4 + int(length.group(1))
            if len(buf) >= total:
                out.append(buf[:total])
                buf = buf[total:]
                continue
        chunk = conn.recv(65536)
        assert chunk, f"connection closed after {len(out)} answer(s)"
        buf += chunk
    assert buf == b""
    return out


def ask(port: int, *raw: bytes) -> list[bytes]:
    """Send the requests in one write on one connection; their answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"".join(raw))
        return read_answers(conn, len(raw))


def without_date(answer: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Status line, headers but ``date`` and ``server``, body."""
    head, body = answer.split(b"\r\n\r\n", 1)
    status, *lines = head.split(b"\r\n")
    headers = {}
    for line in lines:
        name, value = line.split(b": ", 1)
        headers[name.lower()] = value
    headers.pop(b"date")
    headers.pop(b"server")
    return status, headers, body


def asgi(app: Any, path: str, headers: dict[str, str]) -> tuple[bytes, dict, bytes]:
    """The same request through the ASGI path (no wire protocol)."""
    resp = TestClient(app).get(path, headers=headers)
    status = f"HTTP/1.1 {resp.status_code} {resp.reason_phrase}".encode()
    return (
        status,
        {k.encode(): v.encode() for k, v in resp.headers.items()},
        resp.content,
    )


CASES = [
    ("/v1/views/t/docs/1", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/a%2Fb%25c", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/3", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/1", {}),
    ("/v1/views/t/docs/1", {"X-Api-Key": "x" * 20}),
    ("/v1/views/u/docs/1", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/nope/docs/1", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/a%01b", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/1?x=1", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/1?min_lsn=1/2/3", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/1?min_lsn=0/16B3748", {"Authorization": f"Bearer {KEY}"}),
    ("/v1/views/t/docs/1", {"Authorization": f"Bearer {KEY}", "Content-Length": "0"}),
    (
        "/v1/views/t/docs/1",
        {"Authorization": f"Bearer {KEY}", "Content-Length": str((1 << 20) + 1)},
    ),
]


@pytest.mark.parametrize(("path", "headers"), CASES)
def test_wire_answers_as_the_asgi_path(served, path, headers):
    port, app = served
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    (answer,) = ask(port, request(path, extra))
    assert without_date(answer) == asgi(app, path, headers)


def test_wire_writes_get_by_id_without_the_asgi_app_and_others_through_it(
    served, monkeypatch
):
    port, _app = served
    calls: list[str] = []
    through = Measured.__call__

    async def counted(self: Measured, scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope.get("path", scope["type"]))
        await through(self, scope, receive, send)

    monkeypatch.setattr(Measured, "__call__", counted)
    ok, missing, health = ask(
        port,
        request("/v1/views/t/docs/1"),
        request("/v1/views/t/docs/3"),
        request("/healthz"),
    )
    assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
    assert missing.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert health.startswith(b"HTTP/1.1 200 OK\r\n")
    assert calls == ["/healthz"]


def test_wire_keeps_pipelined_answers_in_order_and_counts_each(served):
    from prometheus_client import REGISTRY

    def count(status: str) -> float:
        labels = {
            "route": "/v1/views/{view}/docs/{doc_id}",
            "method": "GET",
            "status": status,
        }
        return REGISTRY.get_sample_value("readside_api_requests_total", labels) or 0

    port, _app = served
    before = count("200"), count("404"), count("401")
    paths = ["1", "3", "1", "a%2Fb%25c", "3", "1"]
    answers = ask(
        port,
        *(request(f"/v1/views/t/docs/{p}") for p in paths),
        request("/healthz", ""),
        request("/v1/views/t/docs/1", ""),
    )
    statuses = [a.split(b"\r\n", 1)[0] for a in answers]
    assert statuses == [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 404 Not Found",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 401 Unauthorized",
    ]
    assert b'"id":"a/b%c"' in answers[3]
    assert (count("200"), count("404"), count("401")) == (
        before[0] + 4,
        before[1] + 2,
        before[2] + 1,
    )


def test_wire_closes_after_answering_a_request_that_asks_it(served):
    port, _app = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request("/v1/views/t/docs/1", AUTH + "Connection: close\r\n"))
        (answer,) = read_answers(conn, 1)
        assert b"\r\nconnection: close" in answer.split(b"\r\n\r\n")[0]
        assert conn.recv(100) == b""  # closed by the server


def test_wire_answers_http_1_0_and_closes(served):
    port, _app = served
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(f"GET /v1/views/t/docs/1 HTTP/1.0\r\n{AUTH}\r\n".encode())
        (answer,) = read_answers(conn, 1)
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert conn.recv(100) == b""


def test_wire_survives_a_client_that_leaves_before_its_answer(served):
    port, _app = served
    # waits for a watermark nothing reaches (Kafka is closed): 412 after 1 s
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request("/v1/views/t/docs/1?min_lsn=0/16B3748"))
    time.sleep(1.5)
    (answer,) = ask(port, request("/v1/views/t/docs/1"))
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n")


def test_protocol_is_the_wire_one_only_on_tested_uvicorn_releases(monkeypatch):
    release = ".".join(str(n) for n in sorted(wire.TESTED)[0])
    monkeypatch.setattr(uvicorn, "__version__", f"{release}.9")
    assert wire.protocol() is wire.HttpProtocol
    for other in ("0.20.0", "1.0.0", "dev"):
        monkeypatch.setattr(uvicorn, "__version__", other)
        assert wire.protocol() == "auto"


def test_wire_leaves_an_app_that_is_not_readsides_to_asgi():
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("not run")

    assert wire._front(app) is None
    assert wire._front(Measured(app)) is None  # measured, but no FastGet


def test_wire_counts_and_answers_500_when_answering_fails(served, monkeypatch):
    from prometheus_client import REGISTRY

    from query.fastpath import FastGet, Ready

    def count() -> float:
        labels = {
            "route": "/v1/views/{view}/docs/{doc_id}",
            "method": "GET",
            "status": "500",
        }
        return REGISTRY.get_sample_value("readside_api_requests_total", labels) or 0

    port, _app = served
    before = count()

    async def broken(self: FastGet, scope: Any, parts: list[str]) -> Any:
        scope["route"] = self.route
        raise ValueError("a bug")

    monkeypatch.setattr(FastGet, "answer", broken)
    (answer,) = ask(port, request("/v1/views/t/docs/1"))
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")

    async def injected(self: FastGet, scope: Any, parts: list[str]) -> Any:
        scope["route"] = self.route
        return Ready(200, b"{}", [(b"x-readside-store", b"a\r\nset-cookie: x=1")])

    monkeypatch.setattr(FastGet, "answer", injected)
    (answer,) = ask(port, request("/v1/views/t/docs/1"))
    assert answer.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"set-cookie" not in answer
    assert count() == before + 2
