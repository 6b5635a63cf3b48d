"""The production recipe as ``docker compose config`` resolves it (issue 11 item 5).

The Compose CLI interpolates the env file, merges override files and
validates the project without a Docker engine (``tests/compose_cli.py``).
Every secret gets its own value here, so the checks below prove each client
is given the very credentials its service is started with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from compose_cli import compose_config, run_compose

from pipeline.config import load

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "compose.env.example"
READSIDE_SERVICES = ("worker", "api", "connector")
INFRASTRUCTURE = ("postgres", "kafka", "connect", "redis", "elasticsearch", "mongo")


def _variables() -> list[str]:
    lines = EXAMPLE.read_text().splitlines()
    return [
        ln.split("=", 1)[0] for ln in lines if ln.strip() and not ln.startswith("#")
    ]


SECRETS = {
    name: f"{name.lower().replace('_', '')}0123456789abcdef"
    for name in _variables()
    if name != "POSTGRES_USER"
}


@pytest.fixture(scope="module")
def resolved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    services: dict[str, Any] = compose_config(
        REPO, SECRETS, tmp_path_factory.mktemp("compose")
    )["services"]
    return services


def _jaas(value: str) -> dict[str, str]:
    return dict(re.findall(r'(\w+)="([^"]*)"', value))


@pytest.mark.parametrize("missing", sorted(SECRETS))
def test_compose_resolved_refuses_to_start_without_a_secret(
    missing: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in SECRETS.items() if k != missing}
    done = run_compose(REPO, env, tmp_path)
    assert done.returncode != 0
    assert f"required variable {missing} is missing a value" in done.stderr


def test_compose_resolved_publishes_the_api_alone(resolved: dict[str, Any]) -> None:
    published = {name for name, svc in resolved.items() if svc.get("ports")}
    assert published == {"api"}


def test_compose_resolved_debug_ports_are_on_loopback(tmp_path: Path) -> None:
    services = compose_config(
        REPO, SECRETS, tmp_path, "docker-compose.yml", "deploy/compose.ports.yml"
    )["services"]
    for name in INFRASTRUCTURE:
        ports = services[name]["ports"]
        assert ports, name
        assert all(p.get("host_ip") == "127.0.0.1" for p in ports), (name, ports)


def test_compose_resolved_every_service_waits_for_healthy_ones(
    resolved: dict[str, Any],
) -> None:
    for name, svc in resolved.items():
        if name != "connector":  # a one-shot job
            assert svc.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        for other, cond in svc.get("depends_on", {}).items():
            assert cond["condition"] == "service_healthy", (name, other)
    assert {"connect", "postgres"} <= set(resolved["connector"]["depends_on"])
    for name in ("worker", "api"):
        assert set(INFRASTRUCTURE) - {"connect"} <= set(resolved[name]["depends_on"])
    # Connect is healthy once its worker has started (joined its group, read
    # its topics), not as soon as its REST port answers
    assert "/health" in " ".join(resolved["connect"]["healthcheck"]["test"])


def test_compose_resolved_kafka_takes_sasl_only(resolved: dict[str, Any]) -> None:
    env = resolved["kafka"]["environment"]
    protocols = dict(
        p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    listeners = dict(
        re.match(r"(\w+)://(.*)", item).groups()  # type: ignore[union-attr]
        for item in env["KAFKA_LISTENERS"].split(",")
    )
    for name, address in listeners.items():
        # every listener other containers can reach asks for SASL; the
        # controller's listens on the container's loopback alone
        if protocols[name] == "PLAINTEXT":
            assert address.startswith("localhost:"), (name, address)
        else:
            assert protocols[name].startswith("SASL_"), name
    advertised = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert all(protocols[a.split("://")[0]].startswith("SASL_") for a in advertised)
    assert protocols[env["KAFKA_INTER_BROKER_LISTENER_NAME"]].startswith("SASL_")
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    users = _jaas(env["KAFKA_LISTENER_NAME_SASL_PLAIN_SASL_JAAS_CONFIG"])
    assert users == {
        "username": "broker",
        "password": SECRETS["KAFKA_BROKER_PASSWORD"],
        "user_broker": SECRETS["KAFKA_BROKER_PASSWORD"],
        "user_connect": SECRETS["KAFKA_CONNECT_PASSWORD"],
        "user_readside": SECRETS["KAFKA_PASSWORD"],
    }
    assert env["KAFKA_LOG_DIRS"] in {v["target"] for v in resolved["kafka"]["volumes"]}


def test_compose_resolved_connect_logs_in_to_kafka(resolved: dict[str, Any]) -> None:
    env = resolved["connect"]["environment"]
    for prefix in ("CONNECT_", "CONNECT_PRODUCER_"):  # the worker, the connector
        assert env[f"{prefix}SECURITY_PROTOCOL"] == "SASL_PLAINTEXT"
        assert env[f"{prefix}SASL_MECHANISM"] == "PLAIN"
        assert _jaas(env[f"{prefix}SASL_JAAS_CONFIG"]) == {
            "username": "connect",
            "password": SECRETS["KAFKA_CONNECT_PASSWORD"],
        }
    assert env["READSIDE_CAPTURE_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]


def test_compose_resolved_stores_ask_for_their_passwords(
    resolved: dict[str, Any],
) -> None:
    redis = resolved["redis"]["command"]
    assert redis[redis.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    es = resolved["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true"
    assert es["ELASTIC_PASSWORD"] == SECRETS["ELASTIC_PASSWORD"]
    mongo = resolved["mongo"]["environment"]
    assert mongo["MONGO_INITDB_ROOT_PASSWORD"] == SECRETS["MONGO_PASSWORD"]
    pg = resolved["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD"] == SECRETS["POSTGRES_PASSWORD"]


@pytest.mark.parametrize("service", READSIDE_SERVICES)
def test_compose_resolved_readside_logs_in_with_the_services_credentials(
    resolved: dict[str, Any], service: str
) -> None:
    svc = resolved[service]
    env = {k: str(v) for k, v in svc["environment"].items()}
    (mount,) = [v for v in svc["volumes"] if v["target"] == env["READSIDE_CONFIG"]]
    assert mount["read_only"]
    cfg = load(mount["source"], env=env)

    client = cfg.kafka.client_conf()
    broker = _jaas(
        resolved["kafka"]["environment"][
            "KAFKA_LISTENER_NAME_SASL_PLAIN_SASL_JAAS_CONFIG"
        ]
    )
    assert client["security.protocol"] == "SASL_PLAINTEXT"
    assert client["sasl.mechanism"] == "PLAIN"
    assert broker[f"user_{client['sasl.username']}"] == client["sasl.password"]

    sinks = cfg.sinks
    redis_url = urlparse(sinks["cache"].url.get_secret_value())  # type: ignore[union-attr]
    assert redis_url.password == SECRETS["REDIS_PASSWORD"]
    search = sinks["search"]
    assert search.password.get_secret_value() == SECRETS["ELASTIC_PASSWORD"]  # type: ignore[union-attr]
    mongo_uri = urlparse(sinks["docs"].uri.get_secret_value())  # type: ignore[union-attr]
    mongo = resolved["mongo"]["environment"]
    assert mongo_uri.username == mongo["MONGO_INITDB_ROOT_USERNAME"]
    assert mongo_uri.password == SECRETS["MONGO_PASSWORD"]
    dsn = urlparse(cfg.source.dsn.get_secret_value())
    assert dsn.password == SECRETS["POSTGRES_PASSWORD"]
    assert {k.key.get_secret_value() for k in cfg.api.keys} == {
        SECRETS["READSIDE_SITE_KEY"],
        SECRETS["READSIDE_OPS_KEY"],
    }
