"""The local broker's second listener: SASL_PLAINTEXT, mechanism PLAIN, on
``stack.kafka_sasl_port``, with one user whose password is made once and
kept in the stack's data directory."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import jvm
from pipeline.stack.provision import Installed
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def kafka(tmp_path: Path) -> jvm.Kafka:
    nowhere = tmp_path / "none"
    installed = Installed(*[nowhere] * 7)
    ctx = Context(
        cfg=StackConfig(kafka_sasl_port=19994), data=tmp_path, installed=installed
    )
    # a broker whose storage is formatted already: prepare() runs no JVM
    (tmp_path / "kafka" / "logs").mkdir(parents=True)
    (tmp_path / "kafka" / "logs" / "meta.properties").write_text("")
    return jvm.Kafka(ctx)


def properties(tmp_path: Path) -> dict[str, str]:
    text = (tmp_path / "kafka" / "server.properties").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_prepare_opens_no_listener_without_sasl(tmp_path: Path) -> None:
    broker = kafka(tmp_path)
    broker.prepare()
    props = properties(tmp_path)
    assert props["listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:19994,"
        "SASL_SSL://127.0.0.1:19095,CONTROLLER://127.0.0.1:19093"
    )
    assert props["advertised.listeners"] == (
        "SASL_PLAINTEXT://127.0.0.1:19994,SASL_SSL://127.0.0.1:19095"
    )
    protocols = dict(
        pair.split(":") for pair in props["listener.security.protocol.map"].split(",")
    )
    assert protocols == {
        "SASL_PLAINTEXT": "SASL_PLAINTEXT",
        "SASL_SSL": "SASL_SSL",
        "CONTROLLER": "SASL_PLAINTEXT",
    }
    # the broker talks to itself and to its controller as the PLAIN user
    assert props["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert props["sasl.mechanism.inter.broker.protocol"] == "PLAIN"
    assert props["sasl.mechanism.controller.protocol"] == "PLAIN"
    assert props["listener.name.controller.sasl.enabled.mechanisms"] == "PLAIN"
    assert props["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == (
        "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )
    client = jvm.sasl_client(tmp_path)
    name, password = client["sasl.username"], client["sasl.password"]
    for listener in ("sasl_plaintext", "controller"):
        jaas = props[f"listener.name.{listener}.plain.sasl.jaas.config"]
        assert f'user_{name}="{password}";' in jaas
        assert f'username="{name}" password="{password}"' in jaas
    assert broker.port == 19994
    assert 19092 not in broker.ports


def test_sasl_password_made_once_kept_private(tmp_path: Path) -> None:
    broker = kafka(tmp_path)
    broker.prepare()
    first = jvm.sasl_client(tmp_path)
    broker.prepare()
    assert jvm.sasl_client(tmp_path) == first
    assert len(first["sasl.password"]) >= 20
    for name in (jvm.SASL_FILE, "server.properties"):
        mode = (tmp_path / "kafka" / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, name


def test_sasl_client_settings_are_taken_by_kafka_client(tmp_path: Path) -> None:
    kafka(tmp_path).prepare()
    cfg = KafkaConfig(
        bootstrap_servers="127.0.0.1:19994", client=jvm.sasl_client(tmp_path)
    )
    assert cfg.secured
    assert cfg.client_conf()["sasl.mechanism"] == "PLAIN"
