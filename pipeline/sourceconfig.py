"""The ``source``, ``connect`` and ``kafka`` sections: the way changes come in.

The PostgreSQL database and tables readside captures (:class:`SourceConfig`),
the Kafka Connect worker that runs the Debezium connector
(:class:`ConnectConfig`), and the Kafka cluster, topics and consumer group
the changes travel through (:class:`KafkaConfig`). :func:`check_table` is the
rule every table name of the configuration follows. The top-level
configuration and its loading are in :mod:`pipeline.config`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

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

    @property
    def transaction_topic(self) -> str:
        """Where Debezium writes each transaction's BEGIN and END events."""
        return f"{self.topic_prefix}.transaction"


#: A value of ``kafka.client``: a librdkafka property's value, or a secret one.
ClientValue = str | int | bool | SecretStr

#: Properties readside sets itself on each client: never shared.
OWN_PROPERTIES = {
    "bootstrap.servers": "set kafka.bootstrap_servers instead",
    "group.id": "readside names each client's group after kafka.group_id",
}

#: what the worker's consumer sets itself, refused in ``kafka.extra``
WORKER_PROPERTIES = {
    **OWN_PROPERTIES,
    "auto.offset.reset": "a partition the group never read is read from its "
    "start, and records dropped before the worker read them are reported "
    "(another reset would skip records and say nothing)",
    "enable.auto.commit": "the worker commits a batch once every store acknowledged it",
    "enable.auto.offset.store": "the worker commits a batch once every store "
    "acknowledged it",
}


def is_secret(name: str) -> bool:
    """Whether the librdkafka property ``name`` holds a secret (a password, a
    client secret, a private key, OAUTHBEARER's config)."""
    return (
        "password" in name
        or "secret" in name
        or name in {"ssl.key.pem", "sasl.oauthbearer.config"}
    )


def _revealed(values: Mapping[str, ClientValue]) -> dict[str, str | int | bool]:
    return {
        k: v.get_secret_value() if isinstance(v, SecretStr) else v
        for k, v in values.items()
    }


_QUIET = logging.getLogger("readside.config.librdkafka")
_QUIET.addHandler(logging.NullHandler())
_QUIET.propagate = False


def _refusal(settings: Mapping[str, Any], consumer: bool) -> str | None:
    """What librdkafka says of ``settings`` when it builds a client of them
    (no broker named: nothing connects); None when it takes them."""
    from confluent_kafka import Consumer, KafkaException, Producer

    conf = {**settings, "logger": _QUIET}
    try:
        if consumer:
            Consumer({**conf, "group.id": "readside-config-check"})
        else:
            Producer(conf)
    except KafkaException as exc:
        return str(exc.args[0].str())
    except (TypeError, ValueError) as exc:
        return str(exc)
    return None


#: ``kafka.max_message_bytes`` unless set: 16 MiB, MongoDB's largest document
MAX_MESSAGE_BYTES = 16 << 20
#: its largest: the buffer of Kafka Connect's producer (``buffer.memory``)
MAX_MESSAGE_BYTES_LIMIT = 32 << 20


class KafkaConfig(_Model):
    """The Kafka cluster, topics and consumer group the changes travel through.

    ``client`` holds the librdkafka settings every client readside makes
    shares (TLS, SASL, ``client.id`` ...), ``extra`` the worker consumer's
    own tuning; :meth:`client_conf` merges them for each client, which
    :mod:`pipeline.kafkaclient` builds.
    """

    bootstrap_servers: str = "127.0.0.1:19094"
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
    #: The largest change record (key and value as the converter writes
    #: them, both images of an update) the table topics take: the topics'
    #: ``max.message.bytes`` and the connector's producer
    #: ``max.request.size``. Kafka's default (1 MiB) failed the connector's
    #: task at a row of a megabyte of text, and every table's capture
    #: stopped with it. At most 32 MiB, the buffer of Connect's producer.
    max_message_bytes: int = Field(
        MAX_MESSAGE_BYTES, ge=1 << 20, le=MAX_MESSAGE_BYTES_LIMIT
    )
    #: librdkafka settings of every consumer, producer and admin client of
    #: readside (worker, commands, API): security.protocol, ssl.*, sasl.*,
    #: client.id ...; the values of secret properties (:func:`is_secret`) are
    #: held as SecretStr and never shown.
    client: dict[str, ClientValue] = Field(default_factory=dict)
    #: more librdkafka settings of the worker's consumer alone, over
    #: readside's own and ``client``'s
    extra: dict[str, str | int | bool] = Field(default_factory=dict)
    #: how the connector writes records: ``json`` (JsonConverter with schemas)
    #: or ``avro`` (Apicurio's AvroConverter, Confluent wire format); the
    #: worker decodes what this says (pipeline.source).
    format: Literal["json", "avro"] = "json"
    #: Apicurio Registry's base URL (``format: avro``): the connector
    #: registers schemas at ``/apis/registry/v2``, the worker reads them by
    #: id at ``/apis/ccompat/v7``.
    schema_registry_url: str = "http://127.0.0.1:18081"
    #: The registry's login for the worker, ``snapshot`` and ``dlq replay``
    #: (they read schemas only): HTTP basic credentials. On
    #: Apicurio Registry with authentication on, an OIDC client's id and
    #: secret (its ``CLIENT_CREDENTIALS_BASIC_AUTH_ENABLED`` mode); the
    #: local stack's is ``readside-worker``, read-only.
    schema_registry_username: str | None = None
    schema_registry_password: SecretStr | None = None

    @field_validator("client")
    @classmethod
    def _shared(cls, client: dict[str, ClientValue]) -> dict[str, ClientValue]:
        """Secret values held as SecretStr; refused: what readside sets
        itself, and what librdkafka does not take (checked here, not at a
        first client)."""
        for name, why in OWN_PROPERTIES.items():
            if name in client:
                raise ValueError(f"{name!r} is not taken here: {why}")
        held: dict[str, ClientValue] = {
            k: SecretStr(str(v)) if is_secret(k) and not isinstance(v, SecretStr) else v
            for k, v in client.items()
        }
        refused = _refusal(_revealed(held), consumer=False) if held else None
        if refused:
            raise ValueError(f"librdkafka refuses it: {refused}")
        return held

    @field_validator("extra")
    @classmethod
    def _tuning(
        cls, extra: dict[str, str | int | bool], info: ValidationInfo
    ) -> dict[str, str | int | bool]:
        """The worker's consumer must take ``extra`` over ``client``, and
        keep what it sets itself."""
        for name, why in WORKER_PROPERTIES.items():
            if name in extra:
                raise ValueError(f"{name!r} is not taken here: {why}")
        client = info.data.get("client") or {}
        refused = _refusal({**_revealed(client), **extra}, True) if extra else None
        if refused:
            raise ValueError(f"librdkafka refuses it: {refused}")
        return extra

    @property
    def secured(self) -> bool:
        """Whether the clients authenticate or encrypt (``security.protocol``
        of ``client`` is not PLAINTEXT): their brokers can refuse them."""
        protocol = self.client.get("security.protocol", "plaintext")
        return str(protocol).lower() != "plaintext"

    @model_validator(mode="after")
    def _registry_login_whole(self) -> KafkaConfig:
        if (self.schema_registry_username is None) != (
            self.schema_registry_password is None
        ):
            raise ValueError(
                "schema_registry_username and schema_registry_password go "
                "together (basic auth)"
            )
        return self

    def client_conf(self, own: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The settings of one client: ``bootstrap.servers``, then ``client``
        (secrets revealed), then the client's ``own`` settings, which win."""
        return {
            "bootstrap.servers": self.bootstrap_servers,
            **_revealed(self.client),
            **(own or {}),
        }


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
    #: The REST API's basic authentication (Kafka Connect's
    #: ``BasicAuthSecurityRestExtension``; the local stack's worker asks for
    #: it): every request readside makes to ``url`` carries it.
    username: str | None = None
    password: SecretStr | None = None
    #: The schema registry's login for the connector's converter
    #: (``kafka.format: avro``), which registers schemas: a user (an OIDC
    #: client id on Apicurio with authentication on; the local stack's is
    #: ``readside-connect``) and a config-provider reference to its
    #: password, resolved by Connect, as ``password_ref`` is.
    registry_username: str | None = None
    registry_password_ref: str | None = Field(None, pattern=_PROVIDER_REF)

    @model_validator(mode="after")
    def _login_whole(self) -> ConnectConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password go together (basic auth)")
        if (self.registry_username is None) != (self.registry_password_ref is None):
            raise ValueError(
                "registry_username and registry_password_ref go together "
                "(the converter's basic auth)"
            )
        return self
