"""docker-compose.yml (production) stays consistent with the local stack."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from repo_config import repo_config_path

from connectors.debezium import connector_config
from pipeline.config import load
from pipeline.stack import kafka_users, provision

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
LOCAL = load(repo_config_path(), env={})
KEYS = {
    "READSIDE_SITE_KEY": "s" * 16,
    "READSIDE_OPS_KEY": "o" * 16,
    "POSTGRES_PASSWORD": "pg-secret",
    "REDIS_PASSWORD": "redis-secret",
    "ELASTIC_PASSWORD": "es-secret",
    "MONGO_PASSWORD": "mongo-secret",
    "KAFKA_PASSWORD": "kafka-secret",
}
PORTS = yaml.safe_load((REPO / "deploy" / "compose.ports.yml").read_text())
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
    # the same Kafka settings but the address and the SASL login
    # (test_compose_resolved checks that login against the broker's users),
    # and the schema registry's login: both run format json, and compose
    # has no registry
    logins = {"bootstrap_servers", "client", "schema_registry_username"}
    logins.add("schema_registry_password")
    assert PROD.kafka.format == LOCAL.kafka.format == "json"
    assert PROD.kafka.model_dump(exclude=logins) == LOCAL.kafka.model_dump(
        exclude=logins
    )
    assert LOCAL.kafka.client_conf()["security.protocol"] == "SASL_PLAINTEXT"
    assert LOCAL.kafka.client_conf()["sasl.mechanism"] == "SCRAM-SHA-256"
    assert PROD.kafka.client_conf()["security.protocol"] == "SASL_PLAINTEXT"
    assert PROD.kafka.client_conf()["sasl.password"] == "kafka-secret"
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
    svc = SERVICES[service]
    listed = [*svc.get("ports", []), *svc.get("expose", [])]
    return {int(str(p).split(":")[-1]) for p in listed}


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


def test_compose_ports_override_publishes_the_local_stack_ports_on_loopback() -> None:
    stack = LOCAL.stack
    expected = {
        "postgres": stack.postgres_port,
        "kafka": stack.kafka_sasl_port,
        "connect": stack.connect_port,
        "redis": stack.redis_port,
        "elasticsearch": stack.elasticsearch_port,
        "mongo": stack.ferretdb_port,
    }
    for service, port in expected.items():
        ports = PORTS["services"][service]["ports"]
        published = {int(str(p).split(":")[1]) for p in ports}
        assert port in published, f"{service} should publish {port}"
        assert all(str(p).startswith("127.0.0.1:") for p in ports), service


def test_compose_publishes_no_infrastructure_port() -> None:
    published = {name for name, svc in SERVICES.items() if svc.get("ports")}
    assert published == {"api"}


def test_compose_every_service_is_health_checked_and_waited_for() -> None:
    for name, svc in SERVICES.items():
        if name == "connector":  # a one-shot job
            continue
        assert "healthcheck" in svc, f"{name} has no healthcheck"
    for name, svc in SERVICES.items():
        needs = svc.get("depends_on", {})
        assert isinstance(needs, dict), f"{name}: depends_on waits for nothing"
        for other, cond in needs.items():
            assert cond == {"condition": "service_healthy"}, (name, other)
    assert "connect" in SERVICES["connector"]["depends_on"]


def test_compose_stores_require_passwords_from_the_environment() -> None:
    assert "${REDIS_PASSWORD:?" in " ".join(SERVICES["redis"]["command"])
    es = SERVICES["elasticsearch"]["environment"]
    assert es["xpack.security.enabled"] == "true"
    assert es["ELASTIC_PASSWORD"].startswith("${ELASTIC_PASSWORD:?")
    mongo = SERVICES["mongo"]["environment"]
    assert mongo["MONGO_INITDB_ROOT_PASSWORD"].startswith("${MONGO_PASSWORD:?")
    pg = SERVICES["postgres"]["environment"]
    assert pg["POSTGRES_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")
    example = (REPO / "deploy" / "compose.env.example").read_text()
    for name in (
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "ELASTIC_PASSWORD",
        "MONGO_PASSWORD",
        "KAFKA_BROKER_PASSWORD",
        "KAFKA_CONNECT_PASSWORD",
        "KAFKA_PASSWORD",
    ):
        assert f"\n{name}=\n" in example, name


def test_compose_config_logs_in_to_every_store_and_names_its_capture_secret() -> None:
    assert "redis-secret" in PROD.sinks["cache"].url.get_secret_value()  # type: ignore[union-attr]
    search = PROD.sinks["search"]
    assert search.username == "elastic"  # type: ignore[union-attr]
    assert search.password.get_secret_value() == "es-secret"  # type: ignore[union-attr]
    assert "mongo-secret" in PROD.sinks["docs"].uri.get_secret_value()  # type: ignore[union-attr]
    settings = connector_config(PROD)
    assert settings["database.password"] == "${env:READSIDE_CAPTURE_PASSWORD}"
    assert "pg-secret" not in settings.values()
    connect = SERVICES["connect"]["environment"]
    assert connect["CONNECT_CONFIG_PROVIDERS"] == "env"
    assert connect["READSIDE_CAPTURE_PASSWORD"].startswith("${POSTGRES_PASSWORD:?")


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


def test_compose_connect_secures_the_same_clients_as_the_stack_worker() -> None:
    """Connect's env sets the security keys under each prefix the local
    stack's worker properties do (kafka_users.CONNECT_PREFIXES), the same
    values under each."""
    connect = SERVICES["connect"]["environment"]
    seen = []
    for prefix in kafka_users.CONNECT_PREFIXES:
        env = "CONNECT_" + prefix.rstrip(".").upper() + ("_" if prefix else "")
        keys = ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_JAAS_CONFIG")
        seen.append(tuple(connect[env + key] for key in keys))
    assert len(set(seen)) == 1, seen
    assert seen[0][:2] == ("SASL_PLAINTEXT", "PLAIN")
    assert 'username="connect"' in seen[0][2]
