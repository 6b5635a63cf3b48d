"""The connector config names the database credentials through Kafka
Connect's config providers (``connect.user_ref``, ``connect.password_ref``):
Connect resolves them when it starts the task, and its REST API never shows
the secret.

The stack's PostgreSQL checks every TCP login's password (SCRAM), so
streaming proves both were resolved: Debezium logs in as a capture role
whose password is only in the file the references name.
"""

from __future__ import annotations

import json

import pytest
from harness import capture_refs

from connectors.debezium import ConnectClient
from connectors.postgres import prepare_source

pytestmark = pytest.mark.integration

SECRET = "planted-s3cret-4711"
SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, body text);"


def test_connector_credentials_come_from_a_config_provider(make_pipeline, tmp_path):
    p = make_pipeline(SCHEMA, ["public.notes"], {"notes": {"table": "public.notes"}})
    prepare_source(p.config)  # the owner's part: publication, heartbeat, signal
    _, secrets = p.make_roles(f"rs_{p.suffix}", capture_password=SECRET)
    p.rewrite(lambda d: d["connect"].update(capture_refs(secrets)))
    p.sql("INSERT INTO notes SELECT g, 'n' || g FROM generate_series(1, 20) g")
    p.apply_connector()
    p.start_worker()
    p.sql("UPDATE notes SET body = body || '!' WHERE id <= 10")
    p.wait_drained(timeout=120)
    p.assert_converged()

    client = ConnectClient.of(p.config.connect)
    name = p.config.connect.connector
    shown = [
        client.request("GET", f"/connectors/{name}/config"),
        client.request("GET", f"/connectors/{name}"),
        client.request("GET", f"/connectors/{name}/tasks"),
    ]
    text = json.dumps(shown)
    assert SECRET not in text
    assert shown[0]["database.user"] == f"${{file:{secrets}:user}}"
    assert shown[0]["database.password"] == f"${{file:{secrets}:password}}"
