"""The search nodes' health probe, against a local HTTP server."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from pipeline.stack import services

pytestmark = pytest.mark.unit


class _Node(BaseHTTPRequestHandler):
    code = 200
    body: ClassVar[dict[str, str]] = {"status": "green"}
    paths: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Node.paths.append(self.path)
        raw = json.dumps(_Node.body).encode()
        self.send_response(_Node.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-elastic-product", "Elasticsearch")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def node() -> Iterator[int]:
    server = HTTPServer(("127.0.0.1", 0), _Node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Node.paths.clear()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_probe_asks_the_node_to_wait_for_yellow(node: int) -> None:
    _Node.code, _Node.body = 200, {"status": "yellow"}
    status, headers = services.cluster_health(node)
    assert status == "yellow"
    assert headers["X-elastic-product"] == "Elasticsearch"
    wait = services.CLUSTER_HEALTH_WAIT_S
    assert _Node.paths == [f"/_cluster/health?wait_for_status=yellow&timeout={wait}s"]


def test_a_wait_that_ends_red_is_a_status_not_a_failed_probe(node: int) -> None:
    """The node answers 408 with the health it has when its wait ends."""
    _Node.code, _Node.body = 408, {"status": "red"}
    status, headers = services.cluster_health(node)
    assert status == "red"
    assert headers["X-elastic-product"] == "Elasticsearch"


def test_a_node_that_fails_otherwise_fails_the_probe(node: int) -> None:
    _Node.code, _Node.body = 500, {"status": "green"}
    with pytest.raises(OSError):
        services.cluster_health(node)
