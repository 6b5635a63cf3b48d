"""The schema registry on the real stack asks every client to log in, each
client may do what its role allows, no more, and a schema it answered
outlives a crash of the registry.

The registry (Apicurio) trades basic credentials for a client-credentials
token at the stack's Keycloak and reads the client's role from it
(:mod:`pipeline.stack.keycloak`): the worker's client reads schemas, the
connector's registers them, neither changes the registry's own settings.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import connect_client, stack_config, wait_for

from pipeline.errors import FatalError
from pipeline.source.registry import CCOMPAT_PATH, SchemaRegistry
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import keycloak, runner
from pipeline.stack.services import port_in_use

pytestmark = pytest.mark.integration

STACK = stack_config()
BASE = f"http://127.0.0.1:{STACK.registry_port}"
CCOMPAT = BASE + CCOMPAT_PATH
SCHEMA = {"schema": json.dumps({"type": "record", "name": "t", "fields": []})}


def login(client: str) -> tuple[str, str]:
    found = keycloak.client_login(Path(STACK.data_dir), client)
    assert found is not None, "the stack keeps no Keycloak clients"
    return found


def call(
    url: str, login: tuple[str, str] | None, method: str = "GET", body: Any = None
) -> tuple[int, Any]:
    """The HTTP status and JSON answer of one request."""
    headers = {"Content-Type": "application/vnd.schemaregistry.v1+json"}
    if login is not None:
        token = base64.b64encode(f"{login[0]}:{login[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, None


def test_registry_refuses_every_client_that_does_not_log_in_or_logs_in_wrong() -> None:
    worker = login(keycloak.WORKER_CLIENT)
    for url in (
        f"{CCOMPAT}/subjects",
        f"{CCOMPAT}/schemas/ids/1",
        f"{BASE}/apis/registry/v2/groups/default/artifacts",
    ):
        assert call(url, None)[0] == 401, url
        assert call(url, (worker[0], worker[1] + "x"))[0] == 401, url
    subject = f"anon-{uuid.uuid4().hex}"
    assert (
        call(f"{CCOMPAT}/subjects/{subject}/versions", None, "POST", SCHEMA)[0] == 401
    )
    status, subjects = call(f"{CCOMPAT}/subjects", worker)
    assert status == 200
    assert subject not in subjects
    # the health endpoint stays open: probes need no login
    assert call(f"{BASE}/health/ready", None)[0] == 200


def test_each_client_does_what_its_role_allows() -> None:
    """The connector's client registers and deletes a subject; the worker's
    reads it and is refused the same writes; neither changes the registry's
    settings (an admin's)."""
    worker, writer = login(keycloak.WORKER_CLIENT), login(keycloak.CONNECT_CLIENT)
    subject = f"roles-{uuid.uuid4().hex}"
    versions = f"{CCOMPAT}/subjects/{subject}/versions"
    assert call(versions, worker, "POST", SCHEMA)[0] == 403
    status, answer = call(versions, writer, "POST", SCHEMA)
    assert status == 200
    schema_id = int(answer["id"])
    try:
        status, answer = call(f"{CCOMPAT}/schemas/ids/{schema_id}", worker)
        assert status == 200
        assert json.loads(answer["schema"]) == json.loads(SCHEMA["schema"])
        # readside's own reader, as the worker
        kafka = KafkaConfig(
            schema_registry_url=BASE,
            schema_registry_username=worker[0],
            schema_registry_password=worker[1],
        )
        assert SchemaRegistry.of(kafka).schema(schema_id)["name"] == "t"
        assert call(f"{CCOMPAT}/subjects/{subject}", worker, "DELETE")[0] == 403
        for who in (worker, writer):
            assert (
                call(f"{CCOMPAT}/config", who, "PUT", {"compatibility": "NONE"})[0]
                == 403
            )
    finally:
        assert call(f"{CCOMPAT}/subjects/{subject}", writer, "DELETE")[0] == 200
        call(f"{CCOMPAT}/subjects/{subject}?permanent=true", writer, "DELETE")


def test_worker_refused_by_the_registry_stops_naming_its_login_settings() -> None:
    """A wrong or missing login is a configuration error, named, at once:
    not an outage waited out, and no record dead-lettered for it."""
    worker = login(keycloak.WORKER_CLIENT)
    wrong = KafkaConfig(
        schema_registry_url=BASE,
        schema_registry_username=worker[0],
        schema_registry_password="not-the-secret",
    )
    with pytest.raises(
        FatalError, match=r"refused the login of kafka\.schema_registry"
    ):
        SchemaRegistry.of(wrong).schema(1)
    with pytest.raises(FatalError, match=r"asks for kafka\.schema_registry_username"):
        SchemaRegistry.of(KafkaConfig(schema_registry_url=BASE)).schema(1)


def test_connector_config_names_the_converter_s_registry_secret_not_holds_it(
    make_pipeline,
) -> None:
    """An Avro connector's config, as Connect's REST API shows it, carries
    the reference to the converter's registry password, never the password;
    the connector runs (its converter logged in and registered schemas)."""
    p = make_pipeline(
        "CREATE TABLE regauth (id int PRIMARY KEY, name text);",
        ["public.regauth"],
        {"regauth": {"table": "public.regauth", "sinks": ["redis"]}},
    )
    p.rewrite(lambda data: data["kafka"].update(format="avro"))
    p.apply_connector()
    secret = login(keycloak.CONNECT_CLIENT)[1]
    name = p.config.connect.connector
    config = connect_client().request("GET", f"/connectors/{name}/config")
    text = json.dumps(config)
    assert secret not in text
    ref = p.config.connect.registry_password_ref
    assert ref is not None
    assert config["value.converter.apicurio.auth.password"] == ref
    assert config["value.converter.apicurio.auth.username"] == keycloak.CONNECT_CLIENT
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO regauth VALUES (1, 'a'), (2, 'b')")
    p.start_worker()
    p.wait_drained(timeout=120)
    assert not p.dead_letters()
    p.assert_converged()


@pytest.mark.exclusive  # stops the stack's registry
def test_a_schema_the_registry_answered_outlives_a_kill_9_at_once() -> None:
    """The connector's converter writes records naming a schema by the id
    the registry answered, from the moment it answers. A registry killed
    right after (``kill -9``, the OOM killer) must hold that schema when it
    is back: else the records name an id it does not know, dead-lettered
    for good, and the next schema registered is given the same id, so that
    a worker decodes them by a schema they were not written in."""
    worker, writer = login(keycloak.WORKER_CLIENT), login(keycloak.CONNECT_CLIENT)
    (registry,) = [s for s in runner.status(STACK) if s.name == "registry"]
    assert registry.pid is not None, "the stack's registry is not running"
    subject = f"crash-{uuid.uuid4().hex}"
    schema = {
        "type": "record",
        "name": "crash",
        "fields": [{"name": "a", "type": "int"}],
    }
    status, answer = call(
        f"{CCOMPAT}/subjects/{subject}/versions",
        writer,
        "POST",
        {"schema": json.dumps(schema)},
    )
    assert status == 200
    try:
        os.killpg(registry.pid, signal.SIGKILL)
        # its port closes with it (a process this one started stays a
        # zombie until reaped, so its pid is no sign)
        wait_for(lambda: not port_in_use(registry.port), 30, "the registry gone")
    finally:
        runner.start_service(STACK, "registry")
    try:
        status, kept = call(f"{CCOMPAT}/schemas/ids/{int(answer['id'])}", worker)
        assert status == 200, f"schema {answer['id']} lost by the crash"
        assert json.loads(kept["schema"]) == schema
    finally:
        call(f"{CCOMPAT}/subjects/{subject}", writer, "DELETE")
        call(f"{CCOMPAT}/subjects/{subject}?permanent=true", writer, "DELETE")
