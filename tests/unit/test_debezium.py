"""The Debezium connector's settings built from the config (no Connect needed)."""

from __future__ import annotations

import pytest

from connectors.debezium import connector_config, failed_task_problems
from connectors.postgres import captured_tables
from pipeline import config

pytestmark = pytest.mark.unit


def _cfg(tables: list[str] | None = None, **kafka: object) -> config.Config:
    tables = tables or ["public.orders", "public.customers"]
    return config.parse(
        {
            "source": {"dsn": "postgresql://u:pw@db:5432/shop", "tables": tables},
            "sinks": {"cache": {"type": "redis"}},
            "views": {"orders": {"table": "public.orders", "sinks": ["cache"]}},
            "kafka": kafka,
        }
    )


def test_connector_config_publication_is_made_by_readside_through_roots() -> None:
    settings = connector_config(_cfg())
    assert settings["publication.autocreate.mode"] == "disabled"
    assert settings["publish.via.partition.root"] == "true"


def test_connector_config_includes_exactly_the_captured_tables() -> None:
    cfg = _cfg()
    included = connector_config(cfg)["table.include.list"].split(",")
    assert included == captured_tables(cfg)
    assert included == [
        *cfg.source.tables,
        cfg.source.heartbeat_table,
        cfg.source.signal_table,
    ]


def test_captured_tables_heartbeat_listed_as_source_table_appears_once() -> None:
    cfg = _cfg(["public.orders", "public.readside_heartbeat"])
    assert captured_tables(cfg) == [
        "public.orders",
        "public.readside_heartbeat",
        "public.readside_signal",
    ]


def _with(dsn: str, connect: dict[str, str]) -> config.Config:
    return config.parse(
        {
            "source": {"dsn": dsn, "tables": ["public.orders"]},
            "connect": connect,
            "sinks": {"cache": {"type": "redis"}},
            "views": {"orders": {"table": "public.orders", "sinks": ["cache"]}},
        }
    )


def test_connector_config_names_secrets_through_config_providers() -> None:
    from connectors.debezium import secret_risks

    plain = _cfg()
    assert connector_config(plain)["database.password"] == "pw"
    assert "connect.password_ref" in secret_risks(plain)[0]
    refs = {
        "user_ref": "${file:/etc/connect/db.properties:user}",
        "password_ref": "${env:CAPTURE_PASSWORD}",
    }
    cfg = _with("postgresql://u:pw@db:5432/shop", refs)
    settings = connector_config(cfg)
    assert settings["database.user"] == refs["user_ref"]
    assert settings["database.password"] == refs["password_ref"]
    assert "pw" not in settings.values()
    assert secret_risks(cfg) == []
    assert secret_risks(_with("postgresql://u@db/shop", {})) == []


def test_connect_secret_refs_must_be_provider_references() -> None:
    with pytest.raises(config.ConfigError, match=r"connect\.password_ref"):
        _with("postgresql://u@db/shop", {"password_ref": "hunter2"})


def test_connector_config_carries_the_dsn_tls_settings() -> None:
    cfg = _with(
        "postgresql://u@db/shop?sslmode=verify-full&sslrootcert=/ca.pem"
        "&sslcert=/c.pem&sslkey=/k.pem",
        {},
    )
    settings = connector_config(cfg)
    assert settings["database.sslmode"] == "verify-full"
    assert settings["database.sslrootcert"] == "/ca.pem"
    assert settings["database.sslcert"] == "/c.pem"
    assert settings["database.sslkey"] == "/k.pem"
    assert "database.sslmode" not in connector_config(_cfg())


def test_connector_config_ends_each_transaction_with_a_record_kept_a_day() -> None:
    # the END event carries the commit LSN into Connect's next offset flush,
    # so a lone write is confirmed to the slot without waiting for another
    import re

    cfg = _cfg()
    settings = connector_config(cfg)
    assert settings["provide.transaction.metadata"] == "true"
    assert settings["topic.creation.groups"] == "transactions"
    include = settings["topic.creation.transactions.include"]
    assert re.fullmatch(include, cfg.source.transaction_topic)
    assert cfg.source.transaction_topic == f"{cfg.source.topic_prefix}.transaction"
    for table in cfg.source.tables:  # the table topics stay in the default group
        assert not re.fullmatch(include, cfg.source.topic(table))
    # unique keys (transaction ids): compaction would keep them all
    assert settings["topic.creation.transactions.cleanup.policy"] == "delete"
    assert settings["topic.creation.transactions.retention.ms"] == str(86_400_000)
    assert settings["topic.creation.default.cleanup.policy"] == "compact"


def test_generated_columns_are_left_out_of_the_records_by_exact_name() -> None:
    cfg = _cfg()
    assert "column.exclude.list" not in connector_config(cfg)
    generated = ["public.orders.total", "public.order$s.x"]
    settings = connector_config(cfg, generated)
    excluded = settings["column.exclude.list"].split(",")
    assert excluded == [r"public\.orders\.total", r"public\.order\$s\.x"]


def test_changes_up_to_kafka_max_message_bytes_pass_the_producer_and_topics() -> None:
    settings = connector_config(_cfg())
    assert settings["producer.override.max.request.size"] == str(16 << 20)
    assert settings["topic.creation.default.max.message.bytes"] == str(16 << 20)
    for size in (1 << 20, 32 << 20):
        settings = connector_config(_cfg(max_message_bytes=size))
        assert settings["producer.override.max.request.size"] == str(size)
    for size in (1 << 19, 33 << 20):  # Kafka's own; Connect producer's buffer
        with pytest.raises(config.ConfigError, match=r"kafka\.max_message_bytes"):
            _cfg(max_message_bytes=size)


def test_a_task_failed_on_a_too_large_change_names_its_size_and_the_way_out() -> None:
    cfg = _cfg()
    trace = (
        "org.apache.kafka.connect.errors.ConnectException: Unrecoverable exception "
        "from producer send callback\n\tat ...\nCaused by: org.apache.kafka.common."
        "errors.RecordTooLargeException: The message is 2090185 bytes when "
        "serialized which is larger than 1048576, which is the value of the "
        "max.request.size configuration.\n"
    )
    status = {
        "tasks": [
            {"id": 0, "state": "FAILED", "trace": trace},
            {"id": 1, "state": "RUNNING", "trace": trace},
            {"id": 2, "state": "FAILED", "trace": "java.lang.OutOfMemoryError"},
        ]
    }
    (said,) = failed_task_problems(cfg, status)
    assert said.startswith(
        "connector task 0 failed on a change of 2090185 bytes, larger than the "
        f"table topics take (kafka.max_message_bytes {16 << 20})"
    )
    assert said.endswith(
        "run readside connector apply, which raises the topics' "
        "limit and restarts the task at that change"
    )
    # the broker's refusal does not say the size
    broker = "RecordTooLargeException: The request included a message larger"
    (said,) = failed_task_problems(
        cfg, {"tasks": [{"id": 3, "state": "FAILED", "trace": broker}]}
    )
    assert said.startswith("connector task 3 failed on a change, larger than")


def test_raising_the_topic_limits_says_a_kafka_that_does_not_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from confluent_kafka import KafkaError, KafkaException

    from connectors import debezium
    from pipeline.errors import TransientError

    class Silent:
        def list_topics(self, timeout: float) -> None:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "down"))

    monkeypatch.setattr(debezium.kafkaclient, "admin", lambda _kafka: Silent())
    with pytest.raises(TransientError, match="connector apply reads the table"):
        debezium.raise_topic_limits(_cfg())
