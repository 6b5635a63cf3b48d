"""The local stack itself: idempotent up, down/up, port conflicts, real services.

The down/up cycle runs on a second stack (own data dir, own ports) so the
suite's main stack stays up for every other test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymongo
import pymongo.errors
import pytest
import redis
import yaml
from confluent_kafka import KafkaException
from elasticsearch import Elasticsearch

from connectors.debezium import ConnectClient
from pipeline import kafkaclient
from pipeline.config import StackConfig, load
from pipeline.errors import FatalError
from pipeline.sourceconfig import ConnectConfig, KafkaConfig
from pipeline.stack import kafka_users, runner
from pipeline.stack.ferretdb import ferretdb_client
from pipeline.stack.jvm import rest_user
from pipeline.stack.postgres import NO_PASSFILE, superuser_dsn
from pipeline.stack.redis_server import redis_client
from pipeline.stack.services import port_in_use

# exclusive: a second stack of every service starts beside the main one
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

REPO = Path(__file__).resolve().parents[2]
MAIN = StackConfig()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


def _below_ephemeral(port: int) -> int:
    """``port``, moved below Linux's ephemeral range (32768-60999): a port in
    it can be taken at any moment as the local end of some client's
    connection, and a server then fails to bind it (the PostgreSQL ports
    55432 + 1000 did, once, in a CI run with hundreds of connections open)."""
    return port if port < 32768 else port - 30000


def shifted(tmp: Path, offset: int) -> StackConfig:
    m = MAIN

    def at(port: int) -> int:
        return _below_ephemeral(port + offset)

    return StackConfig(
        data_dir=str(tmp / "stack"),
        postgres_port=at(m.postgres_port),
        kafka_controller_port=at(m.kafka_controller_port),
        kafka_sasl_port=at(m.kafka_sasl_port),
        kafka_ssl_port=at(m.kafka_ssl_port),
        connect_port=at(m.connect_port),
        redis_port=at(m.redis_port),
        redis_tls_port=at(m.redis_tls_port),
        elasticsearch_port=at(m.elasticsearch_port),
        ferretdb_port=at(m.ferretdb_port),
        ferretdb_tls_port=at(m.ferretdb_tls_port),
        ferretdb_backend_port=at(m.ferretdb_backend_port),
        registry_port=at(m.registry_port),
        keycloak_port=at(m.keycloak_port),
        opensearch_port=at(m.opensearch_port),
    )


def config_file(tmp: Path, stack: StackConfig) -> Path:
    path = tmp / "stack.yaml"
    path.write_text(yaml.safe_dump({"stack": stack.model_dump(exclude_none=True)}))
    return path


def test_stack_up_when_already_up_is_a_noop() -> None:
    before = {s.name: s.pid for s in runner.status(MAIN)}
    proc = cli("stack", "up")
    assert proc.returncode == 0, proc.stderr
    assert "started: nothing (all up)" in proc.stdout
    after = {s.name: s.pid for s in runner.status(MAIN)}
    assert after == before


def test_stack_status_probes_every_service() -> None:
    proc = cli("stack", "status", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    # the optional OpenSearch is listed once started (stack up --with opensearch)
    optional = {"opensearch"} if port_in_use(MAIN.opensearch_port) else set()
    default = {
        "postgres",
        "redis",
        "elasticsearch",
        "ferretdb_backend",
        "ferretdb",
        "kafka",
        "keycloak",
        "registry",
        "connect",
    }
    assert set(rows) == default | optional
    assert all(r["problem"] is None and r["pid"] for r in rows.values())


def test_stack_status_from_another_directory_probes_the_ports(tmp_path: Path) -> None:
    """Where there is neither readside.yaml nor a pid file, the default ports
    are probed: the running stack is reported, without pids, and nothing is
    created there. A --config after the subcommand finds the pid files."""
    env = {k: v for k, v in os.environ.items() if k != "READSIDE_CONFIG"}
    env["PYTHONPATH"] = str(REPO)  # this checkout, from any directory

    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pipeline.cli", "stack", "status", *args],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env=env,
        )

    found = status("--json")
    assert found.returncode == 0, found.stdout + found.stderr
    rows = json.loads(found.stdout)
    assert len(rows) == len(runner.status(MAIN))
    assert all(r["running"] and r["problem"] is None for r in rows), rows
    assert all(r["pid"] is None for r in rows), rows
    assert not (tmp_path / ".readside").exists()
    text = status()
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.count(" healthy") == len(rows), text.stdout
    assert "pid -: found on its port" in text.stdout

    main_stack = MAIN.model_copy(update={"data_dir": str(REPO / MAIN.data_dir)})
    named = status("--json", "--config", str(config_file(tmp_path, main_stack)))
    assert named.returncode == 0, named.stdout + named.stderr
    pids = {r["name"]: r["pid"] for r in json.loads(named.stdout)}
    assert pids == {s.name: s.pid for s in runner.status(MAIN)}
    assert all(pids.values()), pids


@pytest.fixture
def taken_port() -> Iterator[int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def test_stack_up_port_taken_names_the_port_and_starts_nothing(
    tmp_path: Path, taken_port: int
) -> None:
    stack = shifted(tmp_path, 2000).model_copy(update={"redis_port": taken_port})
    proc = cli("--config", str(config_file(tmp_path, stack)), "stack", "up")
    assert proc.returncode != 0
    assert f"port {taken_port} (redis)" in proc.stderr
    assert all(s.pid is None for s in runner.status(stack))


def test_stack_down_then_up_again_on_a_second_stack(tmp_path: Path) -> None:
    # Services run as an unprivileged user, which cannot enter pytest's tmp.
    data = REPO / ".readside" / f"test-{uuid.uuid4().hex[:8]}"
    stack = shifted(data, 1000)
    path = str(config_file(tmp_path, stack))
    try:
        # with the optional OpenSearch node: up starts it, status lists it,
        # down stops it with the rest
        up = cli("--config", path, "stack", "up", "--with", "opensearch")
        assert up.returncode == 0, up.stdout + up.stderr
        rows = runner.status(stack)
        assert all(s.healthy for s in rows)
        assert "opensearch" in {s.name for s in rows}
        # a fresh broker: its SCRAM user made, and taken over SASL_SSL with
        # the stack's CA (the probe logs in with it once the file is kept)
        made = runner.data_dir(stack)
        scram = kafka_users.over_tls(made, kafka_users.scram_client(made))
        assert scram["ssl.ca.location"] == str(made / "tls" / "ca.crt")
        # and Connect's SCRAM user, made before Connect started, with which
        # its worker came up healthy through the SASL_SSL listener
        worker = (made / "connect" / "connect-distributed.properties").read_text()
        assert f"bootstrap.servers=127.0.0.1:{stack.kafka_ssl_port}\n" in worker
        assert "\nsecurity.protocol=SASL_SSL\n" in worker
        assert kafka_users.connect_user(made)["username"] == "readside-connect"
        main_pids = {s.name: s.pid for s in runner.status(MAIN)}
        down = cli("--config", path, "stack", "down")
        assert down.returncode == 0, down.stderr
        assert all(s.pid is None for s in runner.status(stack))
        assert not port_in_use(stack.opensearch_port)
        # down stops only what this stack's up started
        assert {s.name: s.pid for s in runner.status(MAIN)} == main_pids
        again = cli("--config", path, "stack", "up")
        assert again.returncode == 0, again.stdout + again.stderr
        assert all(s.healthy for s in runner.status(stack))
    finally:
        cli("--config", path, "stack", "down")
        shutil.rmtree(data, ignore_errors=True)


def test_each_service_refuses_anonymous_clients_and_serves_its_user() -> None:
    """No service of the stack that can ask for a login takes a client that
    does not log in; each serves the user ``readside.yaml`` logs in as."""
    data = Path(MAIN.data_dir)
    key = f"t-{uuid.uuid4().hex}"
    with redis.Redis(port=MAIN.redis_port) as anonymous:
        with pytest.raises(redis.AuthenticationError):
            anonymous.set(key, "v0")
    acl = redis_client(data, MAIN.redis_tls_port)
    with redis.Redis(
        port=MAIN.redis_port, username=acl["username"], password=acl["password"]
    ) as r:
        r.set(key, "v1")
        assert r.get(key) == b"v1"
        r.delete(key)

    es = Elasticsearch(f"http://127.0.0.1:{MAIN.elasticsearch_port}")
    es.index(index=key, id="1", document={"name": "añ ✓"}, refresh=True)
    assert es.get(index=key, id="1")["_source"] == {"name": "añ ✓"}
    es.indices.delete(index=key)

    with pymongo.MongoClient(
        port=MAIN.ferretdb_port, serverSelectionTimeoutMS=5000
    ) as anonymous_mongo:
        with pytest.raises(pymongo.errors.OperationFailure):
            anonymous_mongo["readside_test"][key].insert_one({"_id": 0})
    with pymongo.MongoClient(ferretdb_client(data, MAIN.ferretdb_port)) as mongo:
        coll = mongo["readside_test"][key]
        coll.replace_one({"_id": 1}, {"_id": 1, "n": 1}, upsert=True)
        coll.replace_one({"_id": 1}, {"_id": 1, "n": 2}, upsert=True)
        assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 2}
        coll.drop()

    # Kafka: no plain listener; the SASL one answers a client that does
    # not log in with nothing, and names its broker to the SCRAM user
    assert not port_in_use(19092)
    plain = KafkaConfig(bootstrap_servers=f"127.0.0.1:{MAIN.kafka_sasl_port}")
    admin = kafkaclient.admin(plain, {"socket.timeout.ms": 2000})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=5)
    user = KafkaConfig(
        bootstrap_servers=plain.bootstrap_servers,
        client=kafka_users.scram_client(data),
    )
    assert kafkaclient.admin(user).list_topics(timeout=10).brokers

    # PostgreSQL, the source and FerretDB's backend: no TCP login without
    # the password (SCRAM), not even the superuser's; the superuser with it
    for service, port in (
        ("postgres", MAIN.postgres_port),
        ("ferretdb_backend", MAIN.ferretdb_backend_port),
    ):
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        with pytest.raises(psycopg.OperationalError, match="no password supplied"):
            psycopg.connect(url, passfile=NO_PASSFILE, connect_timeout=5)
        with pytest.raises(psycopg.OperationalError, match="password authentication"):
            psycopg.connect(url, password="not-it", passfile=NO_PASSFILE)
        if service == "postgres":  # the backend has no WAL senders
            with pytest.raises(psycopg.OperationalError, match="password auth"):
                psycopg.connect(url, password="not-it", replication="database")
        with psycopg.connect(superuser_dsn(data, port, service)) as conn:
            assert conn.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone() == (True,)
        # the socket, which needs none, is in a folder only its owner enters
        assert (data / service).stat().st_mode & 0o077 == 0, service

    # Kafka Connect's REST API: 401 without its login, answers with it
    connect = f"http://127.0.0.1:{MAIN.connect_port}"
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{connect}/connectors", timeout=10)
    assert refused.value.code == 401
    refused.value.close()
    with pytest.raises(FatalError, match="401"):
        ConnectClient(connect).request("GET", "/connectors")
    logged_in = ConnectClient.of(ConnectConfig(url=connect, **rest_user(data)))
    assert isinstance(logged_in.request("GET", "/connectors"), list)


def test_connector_captures_insert_update_delete_in_order(tmp_path: Path) -> None:

    suffix = uuid.uuid4().hex[:8]
    db = f"stacktest_{suffix}"
    admin = superuser_dsn(Path(MAIN.data_dir), MAIN.postgres_port)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {db}")
    dsn = superuser_dsn(Path(MAIN.data_dir), MAIN.postgres_port, db=db)
    cfg_path = tmp_path / "readside.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "source": {
                    "dsn": dsn,
                    "tables": ["public.items"],
                    "slot": f"s_{suffix}",
                    "publication": f"p_{suffix}",
                    "topic_prefix": f"st{suffix}",
                },
                "kafka": {
                    "bootstrap_servers": f"127.0.0.1:{MAIN.kafka_sasl_port}",
                    "client": kafka_users.scram_client(Path(MAIN.data_dir)),
                    "group_id": f"g{suffix}",
                    "partitions": 1,
                },
                "connect": {
                    **rest_user(Path(MAIN.data_dir)),
                    "connector": f"stacktest-{suffix}",
                },
                "sinks": {"cache": {"type": "redis"}},
                "views": {"items": {"table": "public.items", "sinks": ["cache"]}},
            }
        )
    )
    cfg = load(cfg_path)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, name text)")
    try:
        applied = cli("--config", str(cfg_path), "connector", "apply")
        assert applied.returncode == 0, applied.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("INSERT INTO items VALUES (1, 'one')")
            conn.execute("UPDATE items SET name = 'uno' WHERE id = 1")
            conn.execute("DELETE FROM items WHERE id = 1")
        consumer = kafkaclient.consumer(
            cfg.kafka, {"group.id": f"peek-{suffix}", "auto.offset.reset": "earliest"}
        )
        consumer.subscribe([cfg.source.topic("public.items")])
        seen: list[tuple[str, int | None]] = []
        deadline = time.monotonic() + 90
        while len(seen) < 4 and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.value() is None:
                seen.append(("tombstone", None))
                continue
            payload = json.loads(msg.value())["payload"]
            seen.append((payload["op"], payload["source"]["lsn"]))
        consumer.close()
        assert [op for op, _ in seen] == ["c", "u", "d", "tombstone"]
        lsns = [lsn for _, lsn in seen[:3]]
        assert all(isinstance(x, int) and x > 0 for x in lsns)
        assert lsns == sorted(lsns)
    finally:
        cli("--config", str(cfg_path), "connector", "delete", "--drop-slot")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
