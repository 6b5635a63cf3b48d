"""The stack's client passwords, exported one plain file each for the
``${file:...}`` references of ``readside.yaml``."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from pipeline.config import load
from pipeline.stack import client_secrets, tls

pytestmark = pytest.mark.unit


def test_export_writes_each_kept_password_private_and_follows_a_new_one(
    tmp_path: Path,
) -> None:
    kept = {
        name: tls.secret_file(source, f"user-{name}")
        for name, source in client_secrets.sources(tmp_path).items()
        if name in ("kafka", "redis")  # not the others: never started
    }
    written = client_secrets.export(tmp_path)
    folder = tmp_path / "secrets"
    assert sorted(written) == [folder / "kafka.password", folder / "redis.password"]
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name, user in kept.items():
        path = folder / f"{name}.password"
        assert path.read_text() == user["password"] + "\n"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # a service made anew: a new password, exported again after its start
    redis_source = client_secrets.sources(tmp_path)["redis"]
    redis_source.unlink()
    fresh = tls.secret_file(redis_source, "user-redis")
    client_secrets.export(tmp_path)
    assert (folder / "redis.password").read_text() == fresh["password"] + "\n"


def test_the_repository_config_names_the_exported_files() -> None:
    """``readside.yaml`` reads the stack's passwords from the files
    ``stack up`` exports, relative to its own folder."""
    repo = Path(__file__).resolve().parents[2]
    text = (repo / "readside.yaml").read_text()
    for name in ("postgres", "kafka", "redis", "mongodb", "connect"):
        assert f"${{file:.readside/stack/secrets/{name}.password}}" in text, name
    # Debezium's, for Kafka Connect's file provider (its working directory
    # is the stack's data folder)
    assert "password_ref: ${file:secrets/postgres.properties:password}" in text


def test_the_repository_config_loads_with_exported_passwords(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    secrets = tmp_path / ".readside" / "stack" / "secrets"
    secrets.mkdir(parents=True)
    for name in ("postgres", "kafka", "redis", "mongodb", "connect", "registry"):
        (secrets / f"{name}.password").write_text(f"pw-{name}\n")
    config = tmp_path / "readside.yaml"
    config.write_text((repo / "readside.yaml").read_text())
    cfg = load(config, env={})
    assert cfg.kafka.client["sasl.password"].get_secret_value() == "pw-kafka"
    cache = cfg.sinks["cache"]
    assert cache.password.get_secret_value() == "pw-redis"  # type: ignore[union-attr]
    docs = cfg.sinks["docs"].uri.get_secret_value()  # type: ignore[union-attr]
    assert ":pw-mongodb@" in docs
    assert cfg.connect.password is not None
    assert cfg.connect.password.get_secret_value() == "pw-connect"
    assert ":pw-postgres@" in cfg.source.dsn.get_secret_value()
    assert cfg.connect.password_ref == "${file:secrets/postgres.properties:password}"
    registry = cfg.kafka.schema_registry_password
    assert registry is not None
    assert registry.get_secret_value() == "pw-registry"
    assert cfg.connect.registry_password_ref == (
        "${file:secrets/registry-connect.properties:password}"
    )


def test_the_registry_clients_are_exported_for_the_worker_and_for_connect(
    tmp_path: Path,
) -> None:
    """The worker's registry client as a password file; the converter's as a
    properties file Kafka Connect reads."""
    found = client_secrets.sources(tmp_path)
    worker = tls.secret_file(found["registry"], "readside-worker")
    connect = tls.secret_file(found["registry-connect"], "readside-connect")
    written = client_secrets.export(tmp_path)
    folder = tmp_path / "secrets"
    assert (folder / "registry.password").read_text() == worker["password"] + "\n"
    props = folder / "registry-connect.properties"
    assert props in written
    assert props.read_text() == f"password={connect['password']}\n"


def test_the_source_password_is_exported_for_kafka_connect_too(tmp_path: Path) -> None:
    """Debezium's password reaches Kafka Connect as a properties file, which
    its ``file`` provider reads (``connect.password_ref``)."""
    user = tls.secret_file(client_secrets.sources(tmp_path)["postgres"], "postgres")
    written = client_secrets.export(tmp_path)
    props = tmp_path / "secrets" / "postgres.properties"
    assert props in written
    assert props.read_text() == f"password={user['password']}\n"
    assert stat.S_IMODE(props.stat().st_mode) == 0o600


def test_hba_asks_passwords_on_tcp_and_keeps_the_socket_and_other_rules() -> None:
    """initdb --auth=trust's loopback rules ask for SCRAM; the order, the
    socket's rules and the rules readside wrote itself are kept."""
    original = (
        "# comment with trust in it\n"
        "local   all             all                                     trust\n"
        "host    all             all             127.0.0.1/32            trust\n"
        "host    all             all             ::1/128                 trust\n"
        "local   replication     all                                     trust\n"
        "host    replication     all             127.0.0.1/32            trust\n"
        "host all all 10.0.0.0/8 trust  # the trust of a comment\n"
        "hostssl all readside_tls 127.0.0.1/32 scram-sha-256\n"
        "host all readside_anonymous 0.0.0.0/0 reject\n"
    )
    closed = tls.passwords_on_tcp(original).splitlines()
    assert closed[0] == "# comment with trust in it"
    assert closed[1].split()[-1] == "trust"  # the socket: the cluster's folder
    assert closed[2].split() == ["host", "all", "all", "127.0.0.1/32", "scram-sha-256"]
    assert closed[3].split()[-1] == "scram-sha-256"
    assert closed[4].split()[-1] == "trust"
    assert closed[5].split()[-2:] == ["127.0.0.1/32", "scram-sha-256"]
    assert closed[6] == "host all all 10.0.0.0/8 scram-sha-256 # the trust of a comment"
    assert closed[7:] == original.splitlines()[7:]
    assert tls.passwords_on_tcp("\n".join(closed)).splitlines() == closed
