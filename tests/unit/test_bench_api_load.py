"""The load process of ``python -m bench api`` against small local servers:
it counts every answered request, reads replies by their length on
keep-alive connections, and fails on a refused one."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from bench.api_load import load_in_child

pytestmark = pytest.mark.unit


class _Http(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            path = line.split()[1]
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            status = b"404 Not Found" if path.endswith(b"/missing") else b"200 OK"
            body = b'{"doc":' + path + b"}"
            self.wfile.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )


class _Redis(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while True:
            if not self.rfile.readline():  # *2
                return
            for _ in range(4):  # $3 GET $n key
                self.rfile.readline()
            self.wfile.write(b"$5\r\nhello\r\n")


@pytest.fixture
def server(request: Any) -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), request.param)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def spec(kind: str, port: int, targets: list[str]) -> dict[str, Any]:
    return {
        "kind": kind,
        "host": "127.0.0.1",
        "port": port,
        "targets": targets,
        "requests": 300,
        "concurrency": 3,
        "warmup": 10,
    }


@pytest.mark.parametrize("server", [_Http], indirect=True)
def test_api_load_http_counts_every_answered_request(server):
    out = load_in_child(spec("http", server, ["/v1/views/t/docs/1", "/x/2"]), 60)
    assert out["requests"] == 300
    assert out["concurrency"] == 3
    assert out["per_s"] > 0
    assert 0 < out["p50_ms"] <= out["p99_ms"]


@pytest.mark.parametrize("server", [_Http], indirect=True)
def test_api_load_http_refused_request_fails_the_load(server):
    with pytest.raises(RuntimeError, match="404"):
        load_in_child(spec("http", server, ["/v1/views/t/docs/missing"]), 60)


@pytest.mark.parametrize("server", [_Redis], indirect=True)
def test_api_load_redis_counts_every_get(server):
    out = load_in_child(spec("redis", server, ["k:1", "k:2"]), 60)
    assert out["requests"] == 300


@pytest.mark.parametrize("server", [_Http], indirect=True)
def test_api_load_library_clients_on_threads_count_every_request(server):
    out = load_in_child({**spec("http", server, ["/a/1"]), "client": "library"}, 60)
    assert out["requests"] == 300
    with pytest.raises(RuntimeError, match="404"):
        load_in_child({**spec("http", server, ["/missing"]), "client": "library"}, 60)
