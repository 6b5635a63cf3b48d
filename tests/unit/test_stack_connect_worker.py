"""Kafka Connect's worker settings for the broker's SASL_SSL listener
(``kafka_users.connect_worker``) and its SCRAM user's files, as written
without a broker."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.stack import kafka_users, tls

pytestmark = pytest.mark.unit

USER = {"username": "readside-connect", "password": "pw-Abc_123"}


def settings(tmp_path: Path) -> dict[str, str]:
    lines = kafka_users.connect_worker(tmp_path, USER)
    pairs = (line.split("=", 1) for line in lines)
    return dict(pairs)


def test_connect_worker_secures_its_own_and_its_connectors_clients(
    tmp_path: Path,
) -> None:
    props = settings(tmp_path)
    for prefix in ("", "producer.", "consumer.", "admin."):
        assert props[prefix + "security.protocol"] == "SASL_SSL"
        assert props[prefix + "sasl.mechanism"] == "SCRAM-SHA-512"
        assert props[prefix + "sasl.jaas.config"] == (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            'username="readside-connect" password="pw-Abc_123";'
        )
        assert props[prefix + "ssl.truststore.type"] == "PEM"
        assert props[prefix + "ssl.truststore.location"] == str(
            tmp_path / tls.TLS_DIR / "ca.crt"
        )
    assert len(props) == 4 * 5  # nothing else, nothing twice


def test_connect_user_pending_then_kept_beside_readsides(tmp_path: Path) -> None:
    name, username = kafka_users.CONNECT_FILE, kafka_users.CONNECT_USER
    user = kafka_users.scram_user(tmp_path, name, username)
    assert user["username"] == "readside-connect"
    assert kafka_users.scram_user(tmp_path, name, username) == user
    assert not (tmp_path / name).exists()
    mode = (tmp_path / (name + ".part")).stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    kafka_users.keep_scram_user(tmp_path, name)
    (tmp_path / "kafka").mkdir()
    (tmp_path / name).rename(tmp_path / "kafka" / name)
    assert kafka_users.connect_user(tmp_path) == user
    client = kafka_users.connect_client(tmp_path)
    assert client["security.protocol"] == "SASL_SSL"
    assert client["sasl.mechanism"] == "SCRAM-SHA-512"
    assert client["sasl.password"] == user["password"]
    assert client["ssl.ca.location"] == str(tmp_path / tls.TLS_DIR / "ca.crt")
    # readside's own SCRAM user is another file, another name
    other = kafka_users.scram_user(tmp_path)
    assert other["username"] == kafka_users.SCRAM_USER
    assert other["password"] != user["password"]
