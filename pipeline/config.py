"""The readside configuration file: one YAML document validated at start.

``${NAME}`` and ``${NAME:-default}`` are replaced from the environment before
validation, so secrets stay out of the file. Any problem raises
:class:`~pipeline.errors.ConfigError` whose message names the file, the field
and what was expected.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pipeline import sinktypes
from pipeline.apiconfig import ApiConfig
from pipeline.errors import ConfigError
from pipeline.focusconfig import FocusConfig, derived_name, expand

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
    #: Debezium's snapshot.mode: ``initial`` streams every existing row first;
    #: ``no_data`` only streams changes (load views with ``readside snapshot``).
    snapshot_mode: Literal["initial", "no_data", "when_needed", "initial_only"] = (
        "initial"
    )

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


class ConnectConfig(_Model):
    url: str = "http://127.0.0.1:18083"
    connector: str = "readside-postgres"


#: Names the sink config models had when they lived here, for code that
#: still imports them from this module: name -> (sink type, attribute of the
#: kind's module).
_MOVED = {
    "RedisSinkConfig": ("redis", "RedisSinkConfig"),
    "ElasticsearchSinkConfig": ("elasticsearch", "ElasticsearchSinkConfig"),
    "MongoSinkConfig": ("mongodb", "MongoSinkConfig"),
    "MongoWriteConcern": ("mongodb", "MongoWriteConcern"),
}


def __getattr__(name: str) -> Any:
    """The sink config models moved to their store's module (see
    :data:`_MOVED`); found through the kind, never imported here."""
    if name not in _MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    type_name, attr = _MOVED[name]
    module = sys.modules[sinktypes.kind(type_name).config.__module__]
    return getattr(module, attr)


class TransformConfig(_Model):
    """One step of a view's transform chain; options depend on ``type``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    type: str


class ViewSinkOptions(_Model):
    """Per-view settings of one sink (all optional)."""

    model_config = ConfigDict(extra="allow", frozen=True)
    target: str | None = None  # index / collection / key prefix override


def _check_table(table: str) -> str:
    if not _TABLE.match(table):
        raise ValueError(f"table {table!r} must be written as schema.table")
    return table


class _ViewBase(_Model):
    """What every kind of view has: its stores and how documents are finished."""

    sinks: list[str] = Field(min_length=1)
    transforms: list[TransformConfig] = Field(default_factory=list)
    distribution_key: str | None = None
    sink_options: dict[str, ViewSinkOptions] = Field(default_factory=dict)


class TableViewConfig(_ViewBase):
    """One document per row of ``table``, built from the event alone."""

    kind: Literal["table"] = "table"
    table: str
    fields: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    filter: str | None = None  # focus row filter, an expression on the row

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        return _check_table(table)

    def tables(self) -> list[str]:
        return [self.table]

    def table_fields(self) -> list[tuple[str, str]]:
        """(field path, table) of every table the view reads."""
        return [("table", self.table)]


_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _check_columns(cols: list[str]) -> list[str]:
    for c in cols:
        if not _COLUMN.match(c):
            raise ValueError(f"{c!r} is not a plain column name")
    return cols


def _check_on(on: dict[str, str]) -> dict[str, str]:
    if not on:
        raise ValueError("needs at least one column pair")
    _check_columns([*on, *on.values()])
    return on


class _Level(_Model):
    """Field selection, renames and nested relations of one level."""

    fields: list[str] | None = None
    exclude: list[str] = Field(default_factory=list)
    rename: dict[str, str] = Field(default_factory=dict)
    embed: dict[str, RelationConfig] = Field(default_factory=dict)

    @field_validator("fields", "exclude")
    @classmethod
    def _columns(cls, cols: list[str] | None) -> list[str] | None:
        return None if cols is None else _check_columns(cols)


class RelationConfig(_Level):
    """One nested relation of an aggregate view, named by the field it fills.

    Exactly one of ``children`` (one-to-many: an array), ``parent``
    (many-to-one: an object or null) and ``many_to_many`` (an array of the
    rows reached through ``through``) names the related table. ``on`` maps
    columns of the related table (of ``through`` for many-to-many) to columns
    of the enclosing level; ``target_on`` maps columns of the many-to-many
    target to columns of ``through``.
    """

    children: str | None = None
    parent: str | None = None
    many_to_many: str | None = None
    through: str | None = None
    on: dict[str, str]
    target_on: dict[str, str] | None = None
    order_by: list[str] = Field(default_factory=list)
    limit: int | None = Field(None, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _bare_on(cls, data: Any) -> Any:
        """YAML 1.1 reads a bare ``on:`` key as ``true``; take it as ``on``."""
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data

    @field_validator("children", "parent", "many_to_many", "through")
    @classmethod
    def _qualified(cls, table: str | None) -> str | None:
        return None if table is None else _check_table(table)

    @field_validator("on", "target_on")
    @classmethod
    def _pairs(cls, on: dict[str, str] | None) -> dict[str, str] | None:
        return None if on is None else _check_on(on)

    @field_validator("order_by")
    @classmethod
    def _order(cls, cols: list[str]) -> list[str]:
        for c in cols:
            name, _, direction = c.partition(" ")
            _check_columns([name])
            if direction.strip().lower() not in ("", "asc", "desc"):
                raise ValueError(f"order_by {c!r}: direction must be asc or desc")
        return cols

    @model_validator(mode="after")
    def _one_kind(self) -> RelationConfig:
        kinds = [k for k in ("children", "parent", "many_to_many") if getattr(self, k)]
        if len(kinds) != 1:
            raise ValueError(
                "set exactly one of children, parent, many_to_many "
                f"(got {', '.join(kinds) or 'none'})"
            )
        m2m = self.many_to_many is not None
        if m2m and (self.through is None or self.target_on is None):
            raise ValueError("many_to_many needs through and target_on")
        if not m2m and (self.through is not None or self.target_on is not None):
            raise ValueError("through and target_on belong to many_to_many only")
        if self.parent is not None and (self.order_by or self.limit):
            raise ValueError("order_by and limit apply to arrays, not to a parent")
        return self

    @property
    def kind(self) -> str:
        return "children" if self.children else "parent" if self.parent else "m2m"

    @property
    def table(self) -> str:
        table = self.children or self.parent or self.many_to_many
        assert table is not None  # _one_kind
        return table

    def tables(self) -> list[str]:
        return [t for _, t in self.table_fields()]

    def table_fields(self) -> list[tuple[str, str]]:
        kind = "many_to_many" if self.kind == "m2m" else self.kind
        out = [(kind, self.table)]
        if self.through:
            out.append(("through", self.through))
        for key, rel in self.embed.items():
            out += [(f"embed.{key}.{p}", t) for p, t in rel.table_fields()]
        return out


class AggregateViewConfig(_ViewBase, _Level):
    """One document per root row with its related rows nested, read by SQL."""

    kind: Literal["aggregate"]
    table: str
    where: str | None = None  # focus row filter on the root, an SQL predicate

    @field_validator("table")
    @classmethod
    def _qualified(cls, table: str) -> str:
        return _check_table(table)

    @field_validator("where")
    @classmethod
    def _where(cls, where: str | None) -> str | None:
        if where is not None and ";" in where:
            raise ValueError("must be one SQL predicate (no ';')")
        return where

    def tables(self) -> list[str]:
        return [t for _, t in self.table_fields()]

    def table_fields(self) -> list[tuple[str, str]]:
        out = [("table", self.table)]
        for key, rel in self.embed.items():
            out += [(f"embed.{key}.{p}", t) for p, t in rel.table_fields()]
        return out


def _view_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "table"))
    return str(getattr(value, "kind", "table"))


ViewConfig = Annotated[
    Annotated[TableViewConfig, Tag("table")]
    | Annotated[AggregateViewConfig, Tag("aggregate")],
    Discriminator(_view_kind),
]


class WorkerConfig(_Model):
    batch_size: int = Field(2000, ge=1)
    batch_timeout_ms: int = Field(200, ge=1)
    metrics_port: int | None = Field(9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    backoff_initial_ms: int = Field(200, ge=1)
    backoff_max_ms: int = Field(10_000, ge=1)
    shutdown_timeout_s: float = Field(30.0, gt=0)
    #: the consumer group's patience between two polls; a slow store never
    #: reaches it (the worker polls while it waits for a write); at least
    #: the session timeout (10 s)
    max_poll_interval_ms: int = Field(300_000, ge=10_000)
    #: Most roots an aggregate view re-reads in one snapshot: a change that
    #: fans out to more is read (and can be written) a chunk at a time.
    reread_chunk_roots: int = Field(2000, ge=1)
    #: Changes per partition whose identity the worker remembers, to skip
    #: the copies Debezium sends again after Connect restarts
    #: (:mod:`pipeline.redelivery`); 0 turns it off.
    redelivery_window: int = Field(20_000, ge=0)


class StackConfig(_Model):
    """Ports and folders of the local stack (``readside stack``).

    Every port is below Linux's ephemeral range (32768-60999): a port in it
    can be taken at any moment as the local end of a client connection, and
    a service restarted then fails to bind it (PostgreSQL on 55432 did, in
    the fault suite's restart of it).
    """

    data_dir: str = ".readside/stack"
    cache_dir: str | None = None  # default: /var/cache/readside as root
    postgres_port: int = 15432
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    connect_port: int = 18083
    redis_port: int = 16379
    elasticsearch_port: int = 19200
    ferretdb_port: int = 27027
    ferretdb_backend_port: int = 15433
    registry_port: int = 18081


class Config(_Model):
    source: SourceConfig
    kafka: KafkaConfig = KafkaConfig()
    connect: ConnectConfig = ConnectConfig()
    sinks: dict[str, sinktypes.AnySinkConfig] = Field(min_length=1)
    views: dict[str, ViewConfig] = Field(min_length=1)
    focuses: dict[str, FocusConfig] = Field(default_factory=dict)
    worker: WorkerConfig = WorkerConfig()
    stack: StackConfig = StackConfig()
    api: ApiConfig = ApiConfig()
    _effective: dict[str, ViewConfig] = PrivateAttr(default_factory=dict)

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
            for path, table in view.table_fields():
                if table not in self.source.tables:
                    raise ValueError(
                        f"views.{name}.{path}: {table!r} is not in source.tables"
                    )
        self._effective = expand(self.focuses, self.views, self.sinks, ViewSinkOptions)
        for key in self.api.keys:
            if key.focus is not None and key.focus not in self.focuses:
                raise ValueError(
                    f"api.keys[{key.name}].focus: unknown focus {key.focus!r} "
                    f"(known: {', '.join(sorted(self.focuses)) or 'none'})"
                )
        return self

    def effective_views(self) -> dict[str, ViewConfig]:
        """Every view to materialize: the configured views, then one derived
        view per focus (``<view>.<focus>``, see :mod:`pipeline.focusconfig`).

        Everything that runs, loads, checks or reads views iterates these.
        """
        return self._effective

    def focus_view(self, focus: str) -> str:
        """The derived view that materializes ``focus``.

        Raises:
            ConfigError: ``focus`` is not configured.
        """
        if focus not in self.focuses:
            known = ", ".join(sorted(self.focuses)) or "none"
            raise ConfigError(f"unknown focus {focus!r} (known: {known})")
        return derived_name(self.focuses[focus].view, focus)

    def view_topics(self) -> dict[str, list[str]]:
        """Topic -> names of the views fed by it."""
        out: dict[str, list[str]] = {}
        for name, view in self.effective_views().items():
            for table in dict.fromkeys(view.tables()):
                out.setdefault(self.source.topic(table), []).append(name)
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


#: Tags of the view union: pydantic puts the tag after the view's name in an
#: error's location (``views.x.aggregate.where``); it is not a field.
_VIEW_TAGS = ("table", "aggregate")


def _describe(err: dict[str, Any]) -> str:
    parts = [str(p) for p in err["loc"] if not str(p).startswith("function-")]
    if len(parts) > 2 and parts[0] == "views" and parts[2] in _VIEW_TAGS:
        del parts[2]
    loc = ".".join(parts)
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
