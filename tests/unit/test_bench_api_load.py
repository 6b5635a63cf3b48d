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
from connectors.redis import RedisSinkConfig

pytestmark = pytest.mark.unit

#: the ACL user the stand-in Redis takes (user name, password)
USER = ("bench", "p@ss word")


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
    """Answers GET once the connection logged in as :data:`USER` on
    database 2 (``AUTH`` or ``HELLO 3 AUTH``, ``SELECT``), as an ACL user's
    server would; refuses it before."""

    def command(self) -> list[bytes]:
        head = self.rfile.readline()  # *n
        if not head:
            return []
        args = []
        for _ in range(int(head[1:])):
            self.rfile.readline()  # $len
            args.append(self.rfile.readline().rstrip(b"\r\n"))
        return args

    def handle(self) -> None:
        logged_in, db = False, b"0"
        while args := self.command():
            name = args[0].upper()
            if name in (b"AUTH", b"HELLO"):
                logged_in = args[-2:] == [u.encode() for u in USER]
                if not logged_in:
                    self.wfile.write(b"-WRONGPASS invalid username-password\r\n")
                elif name == b"HELLO":
                    self.wfile.write(b"%1\r\n+proto\r\n:3\r\n")
                else:
                    self.wfile.write(b"+OK\r\n")
            elif name == b"GET" and logged_in and db == b"2":
                self.wfile.write(b"$5\r\nhello\r\n")
            elif name == b"SELECT" and logged_in:
                db = args[1]
                self.wfile.write(b"+OK\r\n")
            elif logged_in:
                self.wfile.write(b"-ERR not here\r\n")
            else:
                self.wfile.write(b"-NOAUTH Authentication required.\r\n")


@pytest.fixture
def server(request: Any) -> Iterator[int]:
    srv = socketserver.ThreadingTCPServer(("127.0.0.1", 0), request.param)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def spec(kind: str, port: int, targets: list[str]) -> dict[str, Any]:
    where: dict[str, Any] = {"host": "127.0.0.1", "port": port}
    if kind == "redis":  # as bench.api gives a sink's: its URL and options
        sink = RedisSinkConfig(
            type="redis",
            url=f"redis://127.0.0.1:{port}/2",
            username=USER[0],
            password=USER[1],
        )
        where = {"url": sink.client_url(), "options": sink.client_options()}
    return {
        "kind": kind,
        **where,
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
@pytest.mark.parametrize("client", ["lean", "library"])
def test_api_load_redis_logs_in_as_the_sink_and_counts_every_get(server, client):
    out = load_in_child({**spec("redis", server, ["k:1", "k:2"]), "client": client}, 60)
    assert out["requests"] == 300


@pytest.mark.parametrize("server", [_Redis], indirect=True)
@pytest.mark.parametrize("client", ["lean", "library"])
def test_api_load_redis_refused_login_fails_the_load(server, client):
    wrong = spec("redis", server, ["k:1"])
    wrong["options"]["password"] = "wrong"
    with pytest.raises(RuntimeError, match="invalid username-password"):
        load_in_child({**wrong, "client": client}, 60)


@pytest.mark.parametrize("server", [_Http], indirect=True)
def test_api_load_library_clients_on_threads_count_every_request(server):
    out = load_in_child({**spec("http", server, ["/a/1"]), "client": "library"}, 60)
    assert out["requests"] == 300
    with pytest.raises(RuntimeError, match="404"):
        load_in_child({**spec("http", server, ["/missing"]), "client": "library"}, 60)
