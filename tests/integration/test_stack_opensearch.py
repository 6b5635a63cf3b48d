"""The optional OpenSearch node of the local stack (``readside stack up
--with opensearch``): an OpenSearch 2.19 started from Maven Central's server
modules with its security plugin (HTTPS, an internal user), which keeps
external versions as Elasticsearch does.

The main stack's node must have been started (scripts/test does); the
start/status/stop cycle of ``stack up --with opensearch`` runs on
test_stack's second stack.
"""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from harness import opensearch_sink, stack_config

from pipeline.stack import opensearch, runner

pytestmark = pytest.mark.integration


def request(port: int, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request over HTTPS as the node's internal user."""
    settings = opensearch_sink()
    login = f"{settings['username']}:{settings['password']}".encode()
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"https://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={
            "Content-Type": "application/json",
            "Authorization": "Basic " + base64.b64encode(login).decode(),
        },
    )
    context = ssl.create_default_context(cafile=settings["ca_cert"])
    try:
        with urllib.request.urlopen(req, timeout=30, context=context) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@pytest.fixture(scope="module")
def node() -> int:
    cfg = stack_config()
    rows = {r.name: r for r in runner.status(cfg)}
    row = rows.get("opensearch")
    if row is None or not row.healthy:
        pytest.fail(
            "OpenSearch not running on port "
            f"{cfg.opensearch_port}: run `readside stack up --with opensearch`"
            + (f" ({row.problem})" if row else "")
        )
    return cfg.opensearch_port


def test_node_is_opensearch_2_19_from_maven_central(node: int) -> None:
    status, root = request(node, "GET", "/")
    assert status == 200
    assert root["version"]["distribution"] == "opensearch"
    assert root["version"]["number"] == opensearch.OPENSEARCH_VERSION
    status, plugins = request(node, "GET", "/_cat/plugins?format=json")
    assert status == 200
    # the security plugin of the server's exact version, and no other
    assert [(p["component"], p["version"]) for p in plugins] == [
        ("opensearch-security", f"{opensearch.OPENSEARCH_VERSION}.0")
    ]


def test_external_versions_refuse_an_older_write(node: int) -> None:
    index = f"rs-stack-{uuid.uuid4().hex[:10]}"
    try:
        path = f"/{index}/_doc/1?version_type=external&refresh=true"
        status, body = request(node, "PUT", path + "&version=5", {"v": "new"})
        assert status == 201, body
        assert body["_version"] == 5
        status, body = request(node, "PUT", path + "&version=3", {"v": "old"})
        assert status == 409, body
        assert body["error"]["type"] == "version_conflict_engine_exception"
        status, doc = request(node, "GET", f"/{index}/_doc/1")
        assert status == 200
        assert doc["_source"] == {"v": "new"}
        assert doc["_version"] == 5
    finally:
        request(node, "DELETE", f"/{index}")
