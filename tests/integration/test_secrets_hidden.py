"""No output of readside shows a secret: the source DSN's password (the
stack's superuser's, which PostgreSQL checks), the schema registry's
password of the worker's client and the API keys are looked for in every
command's output, the worker's and the server's logs, the status page and
Connect's REST API.
"""

from __future__ import annotations

import json

import pytest
from apiserver import start_server
from harness import wait_for
from planted import assert_hidden, password_of
from test_dlq import SCHEMA, _produce_poison

from connectors.debezium import ConnectClient

pytestmark = pytest.mark.integration

SITE_KEY = "planted-site-key-0193"
OPS_KEY = "planted-ops-key-7734"


def test_no_output_shows_a_secret(make_pipeline, tmp_path):
    views = {"products": {"table": "public.products"}}
    p = make_pipeline(SCHEMA, ["public.products"], views)
    password = password_of(p.dsn)  # the superuser's, in source.dsn
    secrets = tmp_path / "capture.properties"
    secrets.write_text(f"password={password}\n")

    def plant(data):
        data["connect"]["password_ref"] = f"${{file:{secrets}:password}}"

    p.rewrite(plant)
    p.apply_connector()
    worker = p.start_worker()
    p.sql(
        "INSERT INTO products SELECT g, 'p' || g, g::text FROM generate_series(1, 20) g"
    )
    _produce_poison(p)  # dead letters too: their headers and `dlq list`
    p.wait_drained(timeout=120)

    shown: dict[str, str] = {}
    for args in (
        ("config", "check"),
        ("status",),
        ("status", "--json"),
        ("connector", "status", "--json"),
        ("dlq", "list"),
        ("verify",),
    ):
        run = p.run_cli(*args, ok=False)
        shown[" ".join(args)] = run.stdout + run.stderr
    client = ConnectClient.of(p.config.connect)
    name = p.config.connect.connector
    for path in (f"/connectors/{name}/config", f"/connectors/{name}/tasks"):
        shown[path] = json.dumps(client.request("GET", path))
    server = start_server(
        p,
        {
            "keys": [
                {"name": "site", "key": SITE_KEY, "views": ["products"]},
                {"name": "ops", "key": OPS_KEY, "operator": True},
            ]
        },
    )
    try:
        with server.client(headers={"X-Api-Key": OPS_KEY}) as http:
            for path in ("/status", "/v1/status", "/metrics", "/readyz"):
                resp = http.get(path)
                assert resp.status_code == 200, (path, resp.text)
                shown[path] = resp.text
        with server.client(headers={"X-Api-Key": "wrong-" + SITE_KEY}) as http:
            resp = http.get("/v1/views/products/docs/1")
            assert resp.status_code in (401, 403)
            shown["refused"] = resp.text
    finally:
        server.stop()
    shown["serve log"] = server.log_text()
    assert worker.terminate() == 0, worker.tail()
    shown["worker log"] = worker.log_text()
    wait_for(lambda: all(shown.values()), 5, "every output")
    registry = p.config.kafka.schema_registry_password
    assert registry is not None
    assert_hidden(shown, (password, registry.get_secret_value(), SITE_KEY, OPS_KEY))
