"""The ``source``, ``connect`` and ``kafka`` sections: the way changes come in.

The PostgreSQL database and tables readside captures (:class:`SourceConfig`),
the Kafka Connect worker that runs the Debezium connector
(:class:`ConnectConfig`), and the Kafka cluster, topics and consumer group
the changes travel through (:class:`KafkaConfig`). :func:`check_table` is the
rule every table name of the configuration follows. The top-level
configuration and its loading are in :mod:`pipeline.config`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


def check_table(table: str) -> str:
    """``table`` if it is written as ``schema.table``.

    Raises:
        ValueError: it is not.
    """
    if not _TABLE.match(table):
        raise ValueError(f"table {table!r} must be written as schema.table")
    return table


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Model):
    """The PostgreSQL database whose tables readside captures."""

    dsn: SecretStr
    tables: list[str] = Field(min_length=1)
    lookup_dsn: SecretStr | None = None
    slot: str = Field("readside", pattern=r"^[a-z0-9_]+$")
    publication: str = Field("readside", pattern=r"^[a-z0-9_]+$")
    topic_prefix: str = Field("readside", pattern=r"^[A-Za-z0-9_.-]+$")
    signal_table: str = "public.readside_signal"
    heartbeat_table: str = "public.readside_heartbeat"
    heartbeat_ms: int = Field(1000, ge=100)
    #: Debezium's snapshot.mode: ``initial`` streams every existing row first;
    #: ``no_data`` only streams changes (load views with ``readside snapshot``).
    snapshot_mode: Literal["initial", "no_data", "when_needed", "initial_only"] = (
        "initial"
    )

    @field_validator("tables")
    @classmethod
    def _qualified(cls, tables: list[str]) -> list[str]:
        for t in tables:
            check_table(t)
        return tables

    def topic(self, table: str) -> str:
        return f"{self.topic_prefix}.{table}"


class KafkaConfig(_Model):
    bootstrap_servers: str = "127.0.0.1:19092"
    group_id: str = "readside"
    partitions: int = Field(3, ge=1)
    replication_factor: int = Field(1, ge=1)
    dlq_topic: str = "readside.dlq"
    checkpoint_topic: str = "readside.checkpoints"
    snapshot_topic: str = "readside.snapshots"
    #: how far behind a worker may fall and still see every delete: the table
    #: topics the connector creates keep a delete record uncompacted
    #: (``min.compaction.lag.ms``) and its tombstone (``delete.retention.ms``)
    #: this long. The delete record is the only trace of an aggregate child's
    #: former owner when the link is outside the child's key.
    delete_window_ms: int = Field(86_400_000, ge=0)
    extra: dict[str, str | int | bool] = Field(default_factory=dict)
    #: how the connector writes records: ``json`` (JsonConverter with schemas)
    #: or ``avro`` (Apicurio's AvroConverter, Confluent wire format); the
    #: worker decodes what this says (pipeline.source).
    format: Literal["json", "avro"] = "json"
    #: Apicurio Registry's base URL (``format: avro``): the connector
    #: registers schemas at ``/apis/registry/v2``, the worker reads them by
    #: id at ``/apis/ccompat/v7``.
    schema_registry_url: str = "http://127.0.0.1:18081"


#: A Kafka Connect config-provider reference: ``${provider:[path:]key}``.
_PROVIDER_REF = r"^\$\{[A-Za-z0-9_.-]+:[^{}]+\}$"


class ConnectConfig(_Model):
    url: str = "http://127.0.0.1:18083"
    connector: str = "readside-postgres"
    #: Config-provider references the connector config carries instead of
    #: ``source.dsn``'s user and password, such as
    #: ``${file:/etc/kafka-connect/readside.properties:password}`` or
    #: ``${env:READSIDE_CAPTURE_PASSWORD}``: Connect resolves them when it
    #: starts the task, so its REST API (``GET /connectors/NAME/config``)
    #: never shows the secret. The Connect worker must enable that provider
    #: (``config.providers``); the local stack enables ``file`` and ``env``.
    user_ref: str | None = Field(None, pattern=_PROVIDER_REF)
    password_ref: str | None = Field(None, pattern=_PROVIDER_REF)
