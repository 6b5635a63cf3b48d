"""One place for every Kafka client's settings (``kafka.client``,
:mod:`pipeline.kafkaclient`): the merge, the hidden secrets, the refusals at
load, and that no client of pipeline/ or query/ is built anywhere else."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from confluent_kafka import KafkaError
from pydantic import SecretStr
from repo_config import write_config

from pipeline import config, kafkaclient, startup
from pipeline.errors import ConfigError
from pipeline.sourceconfig import KafkaConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())
PASSWORD = "pw-Zq81-never-shown"
SASL = {
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "app",
    "sasl.password": PASSWORD,
}
#: the client classes of confluent-kafka; only pipeline/kafkaclient.py builds them
CLIENT_CLASSES = {
    "Consumer",
    "Producer",
    "AdminClient",
    "DeserializingConsumer",
    "SerializingProducer",
}


def with_kafka(tmp_path: Path, **kafka: object) -> Path:
    return write_config(tmp_path, {**GOOD, "kafka": {**GOOD["kafka"], **kafka}})


def load_error(path: Path, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        config.load(path, env=env or {})
    return str(info.value)


def test_client_conf_bootstrap_then_client_then_own_settings() -> None:
    kafka = KafkaConfig(
        bootstrap_servers="b1:9094", client={**SASL, "client.id": "shop"}
    )
    conf = kafka.client_conf({"group.id": "g", "client.id": "mine"})
    assert conf == {
        "bootstrap.servers": "b1:9094",
        **SASL,
        "client.id": "mine",
        "group.id": "g",
    }
    assert kafka.client_conf()["client.id"] == "shop"


def test_client_secret_values_hidden_from_repr_and_dumps() -> None:
    kafka = KafkaConfig(
        client={
            **SASL,
            "ssl.key.password": "kp-Zq81",
            "sasl.oauthbearer.client.secret": "cs-Zq81",
        }
    )
    for name in ("sasl.password", "ssl.key.password", "sasl.oauthbearer.client.secret"):
        assert isinstance(kafka.client[name], SecretStr), name
    assert kafka.client["sasl.username"] == "app"
    for text in (repr(kafka), str(kafka), kafka.model_dump_json()):
        assert PASSWORD not in text
        assert "Zq81" not in text
    conf = kafka.client_conf()
    assert conf["sasl.password"] == PASSWORD
    assert conf["ssl.key.password"] == "kp-Zq81"


def test_load_client_password_from_environment_never_in_repr(tmp_path: Path) -> None:
    path = with_kafka(tmp_path, client={**SASL, "sasl.password": "${KAFKA_PW}"})
    cfg = config.load(path, env={"KAFKA_PW": PASSWORD})
    assert cfg.kafka.client_conf()["sasl.password"] == PASSWORD
    assert PASSWORD not in repr(cfg)


def test_load_unknown_client_property_names_field_and_property(tmp_path: Path) -> None:
    msg = load_error(with_kafka(tmp_path, client={"no.such.property": "x"}))
    assert "kafka.client" in msg
    assert "no.such.property" in msg


def test_load_bad_client_value_names_field(tmp_path: Path) -> None:
    msg = load_error(with_kafka(tmp_path, client={"security.protocol": "bogus"}))
    assert "kafka.client" in msg
    assert "security.protocol" in msg


def test_load_sasl_without_password_names_field(tmp_path: Path) -> None:
    client = {k: v for k, v in SASL.items() if k != "sasl.password"}
    msg = load_error(with_kafka(tmp_path, client=client))
    assert "kafka.client" in msg
    assert "sasl.password" in msg


def test_load_refused_client_error_never_shows_a_secret(tmp_path: Path) -> None:
    msg = load_error(with_kafka(tmp_path, client={**SASL, "no.such.property": 1}))
    assert PASSWORD not in msg


def test_load_unknown_extra_property_names_extra(tmp_path: Path) -> None:
    msg = load_error(with_kafka(tmp_path, extra={"fetch.min.bites": 10}))
    assert "kafka.extra" in msg
    assert "fetch.min.bites" in msg


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("auto.offset.reset", "latest"),
        ("enable.auto.commit", True),
        ("enable.auto.offset.store", True),
        ("group.id", "other"),
    ],
)
def test_load_extra_refuses_what_the_worker_sets(
    tmp_path: Path, name: str, value: object
) -> None:
    """A reset to the end would skip records and an automatic commit would
    commit before the stores acknowledged: the worker sets them itself."""
    msg = load_error(with_kafka(tmp_path, extra={name: value}))
    assert "kafka.extra" in msg
    assert f"{name!r} is not taken here" in msg


@pytest.mark.parametrize("name", ["bootstrap.servers", "group.id"])
def test_load_client_refuses_what_readside_sets(tmp_path: Path, name: str) -> None:
    msg = load_error(with_kafka(tmp_path, client={name: "x"}))
    assert "kafka.client" in msg
    assert name in msg


def test_worker_consumer_takes_client_settings_then_extra() -> None:
    cfg = config.parse(
        {
            **GOOD,
            "kafka": {
                **GOOD["kafka"],
                "client": {**SASL, "client.id": "shop", "socket.timeout.ms": 30000},
                "extra": {"fetch.min.bytes": 10, "socket.timeout.ms": 45000},
            },
        }
    )
    conf = startup.consumer_config(cfg)
    assert conf["sasl.password"] == PASSWORD
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert conf["fetch.min.bytes"] == 10
    assert conf["socket.timeout.ms"] == 45000  # extra wins: the worker's tuning
    assert conf["client.id"].startswith("readside-")  # names the worker's scope
    assert conf["enable.auto.commit"] is False
    producer = startup.producer_config(cfg, 1_000_000)
    assert producer["sasl.password"] == PASSWORD
    assert "fetch.min.bytes" not in producer  # extra is the consumer's alone


def test_every_consumer_fetches_again_soon_after_a_full_queue_unless_told() -> None:
    """librdkafka's default waits 1 s before fetching a partition whose local
    queue was full: a catching-up worker idled for most of each second."""
    cfg = config.parse(GOOD)
    assert startup.consumer_config(cfg)["fetch.queue.backoff.ms"] == 10
    kafka = KafkaConfig(bootstrap_servers="b:9092")
    assert kafkaclient.consumer_conf(kafka, {"group.id": "g"}) == {
        "fetch.queue.backoff.ms": 10,
        "bootstrap.servers": "b:9092",
        "group.id": "g",
    }
    told = KafkaConfig(
        bootstrap_servers="b:9092", client={"fetch.queue.backoff.ms": 50}
    )
    assert kafkaclient.consumer_conf(told, {})["fetch.queue.backoff.ms"] == 50
    tuned = config.parse(
        {**GOOD, "kafka": {**GOOD["kafka"], "extra": {"fetch.queue.backoff.ms": 0}}}
    )
    assert startup.consumer_config(tuned)["fetch.queue.backoff.ms"] == 0
    assert "fetch.queue.backoff.ms" not in startup.producer_config(cfg, 1_000_000)


def test_client_built_from_refused_settings_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.client.*no\.such\.property"):
        kafkaclient.new_producer({"no.such.property": 1})


def test_refusals_are_told_by_error_code() -> None:
    assert kafkaclient.refusal(KafkaError(KafkaError._AUTHENTICATION))
    assert kafkaclient.refusal(KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED))
    assert not kafkaclient.refusal(KafkaError(KafkaError._TRANSPORT))
    assert not kafkaclient.refusal(KafkaError(KafkaError._TIMED_OUT))


def test_verify_unreachable_broker_is_an_outage_not_a_refusal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(kafkaclient, "VERIFY_S", 1.0)
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:1", client=SASL)
    admin = kafkaclient.admin(kafka)  # nothing answers: the caller's outage
    assert admin is not None


def _client_names_outside_annotations(tree: ast.AST) -> list[tuple[int, str]]:
    annotations: set[int] = set()
    for node in ast.walk(tree):
        found: list[ast.AST | None] = []
        if isinstance(node, ast.arg):
            found.append(node.annotation)
        elif isinstance(node, ast.AnnAssign):
            found.append(node.annotation)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            found.append(node.returns)
        for ann in found:
            if ann is not None:
                annotations.update(id(n) for n in ast.walk(ann))
    hits = []
    for node in ast.walk(tree):
        if id(node) in annotations:
            continue
        if isinstance(node, ast.Name) and node.id in CLIENT_CLASSES:
            hits.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute) and node.attr in CLIENT_CLASSES:
            hits.append((node.lineno, node.attr))
    return hits


def test_every_kafka_client_of_pipeline_and_query_is_built_in_kafkaclient() -> None:
    """A Consumer, Producer or AdminClient made (or handed out as a factory)
    anywhere but pipeline/kafkaclient.py would miss ``kafka.client``: a
    secured cluster would see it fail where the rest connects."""
    allowed = {
        REPO / "pipeline" / "kafkaclient.py",
        # builds clients naming no broker, only to have librdkafka check
        # kafka.client and kafka.extra at load
        REPO / "pipeline" / "sourceconfig.py",
    }
    bypass = []
    for package in ("pipeline", "query", "connectors", "transforms"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path in allowed:
                continue
            tree = ast.parse(path.read_text(), str(path))
            for line, name in _client_names_outside_annotations(tree):
                bypass.append(f"{path.relative_to(REPO)}:{line}: {name}")
    assert not bypass, "Kafka clients built around pipeline.kafkaclient:\n" + (
        "\n".join(bypass)
    )


def test_every_kafka_client_of_the_bench_is_built_in_kafkaclient() -> None:
    """The bench's clients log in as readside's do: on a cluster that takes
    only SASL clients, one built from ``bootstrap.servers`` alone would be
    refused."""
    # times consume() of the consumer pipeline.kafkaclient builds (a subclass
    # it puts in place of Consumer there)
    allowed = {REPO / "bench" / "snapshot_run.py"}
    bypass = [
        f"{path.relative_to(REPO)}:{line}: {name}"
        for path in sorted((REPO / "bench").rglob("*.py"))
        if path not in allowed
        for line, name in _client_names_outside_annotations(
            ast.parse(path.read_text(), str(path))
        )
    ]
    assert not bypass, "bench Kafka clients around pipeline.kafkaclient:\n" + (
        "\n".join(bypass)
    )


def test_client_check_sees_a_bypass() -> None:
    """The check above finds a call, a factory default and an attribute."""
    tree = ast.parse(
        "import confluent_kafka\n"
        "from confluent_kafka import Consumer\n"
        "def f(c: Consumer) -> Consumer:\n"
        "    x: Consumer | None = None\n"
        "    factory = Consumer\n"
        "    return confluent_kafka.Producer({})\n"
    )
    assert _client_names_outside_annotations(tree) == [(5, "Consumer"), (6, "Producer")]


def test_config_check_plan_shows_client_settings_secrets_hidden() -> None:
    from pipeline.plan import describe

    kafka = {**GOOD["kafka"], "client": SASL, "extra": {"fetch.min.bytes": 10}}
    text = describe(config.parse({**GOOD, "kafka": kafka}))
    assert "kafka: 127.0.0.1:19094" in text
    assert "security.protocol=SASL_PLAINTEXT" in text
    assert "sasl.password=**********" in text
    assert "worker consumer (extra): fetch.min.bytes=10" in text
    assert PASSWORD not in text
