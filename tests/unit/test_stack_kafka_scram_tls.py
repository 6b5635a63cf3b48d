"""The local broker's SCRAM mechanisms and its SASL_SSL listener, as
``prepare`` writes them (no broker started): SCRAM-SHA-256 and -512 beside
PLAIN on both SASL listeners, and a SASL_SSL listener on
``stack.kafka_ssl_port`` serving the stack's certificate as a PEM keystore."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import jvm, kafka_users, tls
from pipeline.stack.provision import Installed
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def kafka(tmp_path: Path) -> jvm.Kafka:
    nowhere = tmp_path / "none"
    ctx = Context(
        cfg=StackConfig(kafka_sasl_port=19994, kafka_ssl_port=19995),
        data=tmp_path,
        installed=Installed(*[nowhere] * 7),
    )
    (tmp_path / "kafka" / "logs").mkdir(parents=True)
    (tmp_path / "kafka" / "logs" / "meta.properties").write_text("")
    return jvm.Kafka(ctx)


def properties(tmp_path: Path) -> dict[str, str]:
    """server.properties as Java reads it (``\\n`` escapes are newlines)."""
    text = (tmp_path / "kafka" / "server.properties").read_text()
    pairs = (line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {k: v.replace("\\n", "\n") for k, v in pairs}


def test_prepare_adds_a_sasl_ssl_listener_with_the_stack_certificate(
    tmp_path: Path,
) -> None:
    broker = kafka(tmp_path)
    broker.prepare()
    props = properties(tmp_path)
    assert "SASL_SSL://127.0.0.1:19995" in props["listeners"].split(",")
    assert "SASL_SSL://127.0.0.1:19995" in props["advertised.listeners"].split(",")
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"]
    assert 19995 in broker.ports
    certs = tls.stack_certs(tmp_path)
    assert props["listener.name.sasl_ssl.ssl.keystore.type"] == "PEM"
    chain = props["listener.name.sasl_ssl.ssl.keystore.certificate.chain"]
    assert chain.strip() == certs.cert.read_text().strip()
    key = props["listener.name.sasl_ssl.ssl.keystore.key"]
    assert key.strip() == certs.key.read_text().strip()
    assert stat.S_IMODE((tmp_path / "kafka/server.properties").stat().st_mode) == (
        0o600
    )
    # the listeners that were there keep their ports and protocols
    for listener in (
        "SASL_PLAINTEXT://127.0.0.1:19994",
        "CONTROLLER://127.0.0.1:19093",
    ):
        assert listener in props["listeners"].split(",")


def test_both_sasl_listeners_take_plain_and_scram(tmp_path: Path) -> None:
    kafka(tmp_path).prepare()
    props = properties(tmp_path)
    for listener in ("sasl_plaintext", "sasl_ssl"):
        prefix = f"listener.name.{listener}."
        assert props[prefix + "sasl.enabled.mechanisms"] == (
            "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
        )
        for mech in ("scram-sha-256", "scram-sha-512"):
            assert props[prefix + f"{mech}.sasl.jaas.config"] == (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            )
        assert "PlainLoginModule" in props[prefix + "plain.sasl.jaas.config"]


def test_scram_user_pending_until_the_broker_knows_it_then_kept(
    tmp_path: Path,
) -> None:
    base = tmp_path / "kafka"
    base.mkdir()
    user = kafka_users.scram_user(base)
    assert kafka_users.scram_user(base) == user  # a retry sets the same one
    assert user["username"] == "readside-scram"
    assert len(user["password"]) >= 20
    with pytest.raises(FileNotFoundError):  # not known yet: no client file
        kafka_users.scram_client(tmp_path)
    kafka_users.keep_scram_user(base)
    assert kafka_users.scram_user(base) == user
    mode = (base / kafka_users.SCRAM_FILE).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    client = kafka_users.scram_client(tmp_path, "SCRAM-SHA-512")
    assert client == {
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "readside-scram",
        "sasl.password": user["password"],
    }
    assert KafkaConfig(client=client).secured


def test_over_tls_trusts_the_stack_ca(tmp_path: Path) -> None:
    kafka(tmp_path).prepare()
    client = kafka_users.over_tls(tmp_path, jvm.sasl_client(tmp_path))
    assert client["security.protocol"] == "SASL_SSL"
    assert client["ssl.ca.location"] == str(tmp_path / "tls" / "ca.crt")
    assert client["sasl.mechanism"] == "PLAIN"
    KafkaConfig(bootstrap_servers="127.0.0.1:19995", client=client)  # taken
