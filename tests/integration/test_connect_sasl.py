"""The stack's Kafka Connect worker reaches Kafka through the broker's
SASL_SSL listener (``stack.kafka_ssl_port``) as a SCRAM user of its own,
trusting the stack's CA, and no longer through the PLAINTEXT listener.

Its worker properties name the listener, the mechanism and the CA for the
worker's own clients and for the ``producer.``, ``consumer.`` and ``admin.``
clients it makes for connectors; its process holds connections to the
SASL_SSL port and none to the PLAINTEXT one; Debezium's change events still
reach their topic. A wrong password is refused: proven with a client of
Connect's credentials file (``connect-client.json``) whose password is
altered, and with Kafka's own Java producer given the worker's ``producer.``
settings, altered the same way (restarting the shared Connect worker with a
bad password would stop every other test's connector).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from harness import wait_for

from pipeline.config import StackConfig
from pipeline.stack import kafka_users, provision, services, tls

pytestmark = pytest.mark.integration

PREFIXES = ("", "producer.", "consumer.", "admin.")
SCHEMA = "CREATE TABLE parcels (id integer PRIMARY KEY, label text NOT NULL);"
WRONG = "not-connects-password-Zq81"
PROBE_TOPIC = "readside-connect-probe"


def worker_properties(data: Path) -> dict[str, str]:
    text = (data / "connect" / "connect-distributed.properties").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return dict(pairs)


def connect_remote_ports(data: Path) -> set[int]:
    """The remote TCP ports of the Connect process's open sockets."""
    pid = int((data / "run" / "connect.pid").read_text())
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] == "01":  # ESTABLISHED
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports


def test_worker_properties_name_sasl_ssl_scram_and_the_stack_ca(
    stack: StackConfig,
) -> None:
    data = Path(stack.data_dir)
    props = worker_properties(data)
    user = kafka_users.connect_user(data)
    assert props["bootstrap.servers"] == f"127.0.0.1:{stack.kafka_ssl_port}"
    for prefix in PREFIXES:
        assert props[prefix + "security.protocol"] == "SASL_SSL", prefix
        assert props[prefix + "sasl.mechanism"] == "SCRAM-SHA-512", prefix
        jaas = props[prefix + "sasl.jaas.config"]
        assert jaas.startswith("org.apache.kafka.common.security.scram."), prefix
        assert f'username="{user["username"]}"' in jaas, prefix
        assert props[prefix + "ssl.truststore.type"] == "PEM", prefix
        ca = Path(props[prefix + "ssl.truststore.location"])
        assert ca.resolve() == (data / tls.TLS_DIR / "ca.crt").resolve(), prefix
    assert user["username"] == kafka_users.CONNECT_USER
    path = data / "connect" / "connect-distributed.properties"
    assert path.stat().st_mode & 0o077 == 0  # it holds the password


def test_connect_talks_to_the_sasl_ssl_port_only(
    stack: StackConfig,
) -> None:
    ports = connect_remote_ports(Path(stack.data_dir))
    assert stack.kafka_ssl_port in ports, ports
    assert stack.kafka_sasl_port not in ports, ports  # no TLS-less listener


def test_change_events_still_reach_their_topic(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(
        SCHEMA, ["public.parcels"], {"parcels": {"table": "public.parcels"}}
    )
    p.sql("INSERT INTO parcels VALUES (1, 'snapshot row')")
    p.apply_connector()
    p.sql("INSERT INTO parcels VALUES (2, 'streamed row')")
    data = Path(stack.data_dir)
    consumer = Consumer(
        {
            **kafka_users.connect_client(data),
            "bootstrap.servers": f"127.0.0.1:{stack.kafka_ssl_port}",
            "group.id": f"connect-sasl-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    labels: set[str] = set()
    try:
        consumer.subscribe([p.config.source.topic("public.parcels")])

        def both() -> bool:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None and msg.value():
                after = json.loads(msg.value())
                after = after.get("payload", after).get("after") or {}
                labels.add(str(after.get("label")))
            return {"snapshot row", "streamed row"} <= labels

        wait_for(both, 120, "the snapshot and the streamed row on the topic")
    finally:
        consumer.close()


def produce(client: dict[str, str], bootstrap: str, topic: str) -> KafkaError | None:
    """One record with ``client``'s settings: None once delivered, else the
    error the client ended with."""
    errors: list[KafkaError] = []
    delivered: list[bool] = []

    def report(err: KafkaError | None, _msg: Any) -> None:
        if err is None:
            delivered.append(True)
        else:
            errors.append(err)

    producer = Producer(
        {
            **client,
            "bootstrap.servers": bootstrap,
            "message.timeout.ms": 15000,
            "error_cb": errors.append,
        }
    )
    producer.produce(topic, b"probe", on_delivery=report)
    deadline = time.monotonic() + 30
    while not delivered and not errors and time.monotonic() < deadline:
        producer.poll(0.5)
    producer.flush(5)
    if delivered:
        return None
    return errors[0] if errors else KafkaError(KafkaError._TIMED_OUT)


def test_connect_credentials_produce_and_a_wrong_password_cannot(
    stack: StackConfig,
) -> None:
    data = Path(stack.data_dir)
    bootstrap = f"127.0.0.1:{stack.kafka_ssl_port}"
    topic = PROBE_TOPIC
    client = kafka_users.connect_client(data)
    assert produce(client, bootstrap, topic) is None
    err = produce({**client, "sasl.password": WRONG}, bootstrap, topic)
    assert err is not None
    assert err.code() == KafkaError._AUTHENTICATION, err


def java_producer(
    props: Path, bootstrap: str, topic: str
) -> subprocess.CompletedProcess[str]:
    libs = provision.locate(services.cache_dir(StackConfig())).kafka_libs
    return subprocess.run(
        [
            services.java_binary(),
            "-Xmx128m",
            "-cp",
            f"{libs}/*",
            "org.apache.kafka.tools.ConsoleProducer",
            "--bootstrap-server",
            bootstrap,
            "--topic",
            topic,
            "--producer.config",
            str(props),
            "--producer-property",
            "max.block.ms=20000",
            "--request-required-acks",
            "all",
            "--sync",
        ],
        input="probe\n",
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_workers_producer_settings_with_a_wrong_password_are_refused(
    stack: StackConfig, tmp_path: Path
) -> None:
    """Kafka's Java producer, with the ``producer.`` settings Connect gives its
    connectors' producers: they produce; with the password altered, the
    broker refuses them."""
    data = Path(stack.data_dir)
    props = worker_properties(data)
    own = {
        k[len("producer.") :]: v for k, v in props.items() if k.startswith("producer.")
    }
    password = kafka_users.connect_user(data)["password"]
    bootstrap = f"127.0.0.1:{stack.kafka_ssl_port}"
    right, wrong = tmp_path / "right.properties", tmp_path / "wrong.properties"
    right.write_text("".join(f"{k}={v}\n" for k, v in own.items()))
    wrong.write_text(right.read_text().replace(password, WRONG))
    assert WRONG in wrong.read_text()
    ok = java_producer(right, bootstrap, PROBE_TOPIC)
    assert ok.returncode == 0, ok.stderr[-2000:]
    bad = java_producer(wrong, bootstrap, PROBE_TOPIC)
    assert bad.returncode != 0
    assert "SaslAuthenticationException" in bad.stderr, bad.stderr[-2000:]
    assert "SCRAM-SHA-512" in bad.stderr, bad.stderr[-2000:]
