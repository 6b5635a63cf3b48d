"""docker-compose.yml (production) stays consistent with the local stack."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from connectors.debezium import connector_config
from pipeline.config import load
from pipeline.stack import provision

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LOCAL = load(REPO / "readside.yaml", env={})
KEYS = {"READSIDE_SITE_KEY": "s" * 16, "READSIDE_OPS_KEY": "o" * 16}
PROD = load(REPO / "deploy" / "readside.compose.yaml", env=KEYS)


def test_compose_has_every_part_of_the_pipeline() -> None:
    assert {
        "postgres",
        "kafka",
        "connect",
        "redis",
        "elasticsearch",
        "mongo",
        "connector",
        "worker",
    } <= set(SERVICES)


def test_compose_postgres_has_logical_decoding() -> None:
    assert "wal_level=logical" in SERVICES["postgres"]["command"]


def test_compose_images_match_the_stack_pins() -> None:
    assert SERVICES["kafka"]["image"].endswith(":" + provision.KAFKA_VERSION)
    assert SERVICES["connect"]["image"].endswith(":" + provision.DEBEZIUM_VERSION)
    assert SERVICES["elasticsearch"]["image"].endswith(
        ":" + provision.ELASTICSEARCH_VERSION
    )


def test_compose_config_has_the_same_pipeline_as_the_stack_config() -> None:
    assert PROD.source.tables == LOCAL.source.tables
    assert PROD.view_topics() == LOCAL.view_topics()
    assert PROD.views == LOCAL.views
    assert {n: s.type for n, s in PROD.sinks.items()} == {
        n: s.type for n, s in LOCAL.sinks.items()
    }
    assert PROD.kafka.model_dump(
        exclude={"bootstrap_servers"}
    ) == LOCAL.kafka.model_dump(exclude={"bootstrap_servers"})
    assert PROD.connect.connector == LOCAL.connect.connector


def test_compose_connector_config_differs_only_in_database_address() -> None:
    prod, local = connector_config(PROD), connector_config(LOCAL)
    differing = {k for k in prod.keys() | local.keys() if prod.get(k) != local.get(k)}
    assert differing <= {"database.hostname", "database.port", "database.password"}
    assert prod["database.hostname"] == "postgres"


def _host_port(url: str) -> tuple[str, int]:
    parsed = urlparse(url if "://" in url else f"x://{url}")
    assert parsed.hostname is not None
    assert parsed.port is not None
    return parsed.hostname, parsed.port


def _container_ports(service: str) -> set[int]:
    return {int(str(p).split(":")[-1]) for p in SERVICES[service].get("ports", [])}


def test_compose_config_addresses_are_compose_services() -> None:
    addresses = [
        PROD.kafka.bootstrap_servers,
        PROD.connect.url,
        PROD.sinks["cache"].url.get_secret_value(),  # type: ignore[union-attr]
        PROD.sinks["search"].hosts[0],  # type: ignore[union-attr]
        PROD.sinks["docs"].uri.get_secret_value(),  # type: ignore[union-attr]
        PROD.source.dsn.get_secret_value(),
    ]
    for address in addresses:
        host, port = _host_port(address)
        assert host in SERVICES, f"{address}: {host} is not a compose service"
        assert port in _container_ports(host), f"{address}: {host} has no port {port}"


def test_compose_host_ports_match_the_local_stack_ports() -> None:
    stack = LOCAL.stack
    expected = {
        "postgres": stack.postgres_port,
        "kafka": stack.kafka_port,
        "connect": stack.connect_port,
        "redis": stack.redis_port,
        "elasticsearch": stack.elasticsearch_port,
        "mongo": stack.ferretdb_port,
    }
    for service, port in expected.items():
        published = {int(str(p).split(":")[0]) for p in SERVICES[service]["ports"]}
        assert port in published, f"{service} should publish {port}"


def test_connector_config_truncates_skipped_compacted_topics_refuse_keyless() -> None:
    # A truncate event has no key; the compacted table topics refuse it and
    # the connector task fails (measured with Kafka 4.1 / Debezium 3.6).
    cfg = connector_config(LOCAL)
    assert cfg["topic.creation.default.cleanup.policy"] == "compact"
    assert "t" in cfg["skipped.operations"].split(",")


def test_compose_api_needs_keys_and_has_an_operator() -> None:
    # serve refuses to start without keys unless anonymous: the recipe is
    # closed, with its keys from the environment compose requires
    assert not PROD.api.anonymous
    assert {k.name for k in PROD.api.keys if k.operator} == {"ops"}
    env = SERVICES["api"].get("environment") or COMPOSE["x-readside"]["environment"]
    for name in ("READSIDE_SITE_KEY", "READSIDE_OPS_KEY"):
        assert env[name].startswith(f"${{{name}:?"), name
