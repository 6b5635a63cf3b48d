"""The readside configuration file: one YAML document validated at start.

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment before
validation, so secrets stay out of the file. Any problem raises
:class:`~pipeline.errors.ConfigError` whose message names the file, the field
and what was expected.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError
from query.api_config import ApiConfig

CONFIG_ENV = "READSIDE_CONFIG"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


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

    @field_validator("tables")
    @classmethod
    def _qualified(cls, tables: list[str]) -> list[str]:
        for t in tables:
            if not _TABLE.match(t):
                raise ValueError(f"table {t!r} must be written as schema.table")
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
    extra: dict[str, str | int | bool] = Field(default_factory=dict)


class ConnectConfig(_Model):
    url: str = "http://127.0.0.1:18083"
    connector: str = "readside-postgres"


class RedisSinkConfig(_Model):
    type: Literal["redis"]
    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    timeout_s: float = Field(5.0, gt=0)
    docs_per_call: int = Field(200, ge=1)


class ElasticsearchSinkConfig(_Model):
    type: Literal["elasticsearch"]
    hosts: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:19200"])
    username: str | None = None
    password: SecretStr | None = None
    timeout_s: float = Field(30.0, gt=0)
    index_prefix: str = "readside-"
    refresh: bool = False


class MongoSinkConfig(_Model):
    type: Literal["mongodb"]
    uri: SecretStr = SecretStr("mongodb://127.0.0.1:27027/")
    database: str = "readside"
    timeout_s: float = Field(30.0, gt=0)


SinkConfig = Annotated[
    RedisSinkConfig | ElasticsearchSinkConfig | MongoSinkConfig,
    Field(discriminator="type"),
]


class TransformConfig(_Model):
    """One step of a view's transform chain; options depend on ``type``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class ViewSinkOptions(_Model):
    """Per-view settings of one sink (all optional)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    target: str | None = None  # index / collection / key prefix override


class TableViewConfig(_Model):
    """One document per row of ``table``, built from the event alone."""

    kind: Literal["table"] = "table"
    table: str
    sinks: list[str] = Field(min_length=1)
    fields: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    filter: str | None = None  # focus row filter, an expression on the row
    transforms: list[TransformConfig] = Field(default_factory=list)
    distribution_key: str | None = None
    sink_options: dict[str, ViewSinkOptions] = Field(default_factory=dict)

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        if not _TABLE.match(table):
            raise ValueError(f"table {table!r} must be written as schema.table")
        return table


class WorkerConfig(_Model):
    batch_size: int = Field(2000, ge=1)
    batch_timeout_ms: int = Field(200, ge=1)
    metrics_port: int | None = Field(9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    backoff_initial_ms: int = Field(200, ge=1)
    backoff_max_ms: int = Field(10_000, ge=1)
    shutdown_timeout_s: float = Field(30.0, gt=0)


class StackConfig(_Model):
    """Ports and folders of the local stack (``readside stack``)."""

    data_dir: str = ".readside/stack"
    cache_dir: str | None = None  # default: /var/cache/readside as root
    postgres_port: int = 55432
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    connect_port: int = 18083
    redis_port: int = 16379
    elasticsearch_port: int = 19200
    ferretdb_port: int = 27027


class Config(_Model):
    source: SourceConfig
    kafka: KafkaConfig = KafkaConfig()
    connect: ConnectConfig = ConnectConfig()
    sinks: dict[str, SinkConfig] = Field(min_length=1)
    views: dict[str, TableViewConfig] = Field(min_length=1)
    worker: WorkerConfig = WorkerConfig()
    stack: StackConfig = StackConfig()
    api: ApiConfig = ApiConfig()

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, view in self.views.items():
            for sink in view.sinks:
                if sink not in self.sinks:
                    known = ", ".join(sorted(self.sinks))
                    raise ValueError(
                        f"views.{name}.sinks: unknown sink {sink!r} (known: {known})"
                    )
            for sink in view.sink_options:
                if sink not in view.sinks:
                    raise ValueError(
                        f"views.{name}.sink_options: {sink!r} is not a sink of "
                        "this view"
                    )
            if view.table not in self.source.tables:
                raise ValueError(
                    f"views.{name}.table: {view.table!r} is not in source.tables"
                )
        return self

    def view_topics(self) -> dict[str, list[str]]:
        """Topic -> names of the views fed by it."""
        out: dict[str, list[str]] = {}
        for name, view in self.views.items():
            out.setdefault(self.source.topic(view.table), []).append(name)
        return out


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Replace ``${NAME}`` / ``${NAME:-default}`` from ``env``."""
    env = dict(os.environ) if env is None else env
    missing: list[str] = []

    def sub(m: re.Match[str]) -> str:
        name, default = m.group(1), m.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    out = _ENV_REF.sub(sub, text)
    if missing:
        raise ConfigError(
            "environment variable(s) not set: " + ", ".join(sorted(set(missing)))
        )
    return out


def _describe(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    return f"{loc or '<top>'}: {msg}{shown}"


def parse(data: Any, origin: str = "<config>") -> Config:
    """Validate already-loaded YAML data."""
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError(
            f"{origin}: invalid configuration\n  " + "\n  ".join(lines)
        ) from None


def _interpolate_tree(node: Any, env: dict[str, str] | None, path: str) -> Any:
    """Interpolate every string value (not keys, not comments) of parsed YAML."""
    if isinstance(node, str):
        try:
            return interpolate(node, env)
        except ConfigError as exc:
            raise ConfigError(f"{path or '<top>'}: {exc}") from exc
    if isinstance(node, dict):
        return {
            k: _interpolate_tree(v, env, f"{path}.{k}" if path else str(k))
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_interpolate_tree(v, env, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def _read(path: str | Path | None, env: dict[str, str] | None) -> tuple[Path, Any]:
    chosen = Path(path or os.environ.get(CONFIG_ENV) or "readside.yaml")
    try:
        text = chosen.read_text()
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read configuration: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{chosen}: expected a mapping at the top level")
    try:
        data = _interpolate_tree(data, env, "")
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: {exc}") from exc
    return chosen, data


def load_stack(
    path: str | Path | None = None, env: dict[str, str] | None = None
) -> StackConfig:
    """Only the ``stack`` section: ``readside stack`` needs nothing else."""
    chosen, data = _read(path, env)
    try:
        return StackConfig.model_validate(data.get("stack") or {})
    except ValidationError as exc:
        lines = [_describe(dict(e)) for e in exc.errors()]
        raise ConfigError(
            f"{chosen}: invalid stack section\n  stack." + "\n  stack.".join(lines)
        ) from exc


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Config:
    """Load, interpolate and validate a configuration file.

    The path defaults to ``$READSIDE_CONFIG``, then ``readside.yaml``.
    Interpolation applies to string values after parsing, so a secret that
    contains YAML syntax cannot change the document's structure.
    """
    chosen, data = _read(path, env)
    return parse(data, str(chosen))
