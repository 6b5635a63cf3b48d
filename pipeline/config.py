"""The readside configuration file: one YAML document validated at start.

``${NAME}``, ``${NAME:-default}`` and ``${file:PATH}`` are replaced from the
environment and from files before validation (:mod:`pipeline.configrefs`), so
secrets stay out of the file.

This module holds the top level (:class:`Config`, which checks what the
sections name of each other) and the loading; each section's models live with
it: :mod:`pipeline.sourceconfig` (``source``, ``connect``, ``kafka``),
:mod:`pipeline.viewconfig` (``views``), :mod:`pipeline.focusconfig`
(``focuses``), :mod:`pipeline.apiconfig` (``api``), each store's package
(``sinks``); ``worker`` and ``stack`` are here. Any problem raises
:class:`~pipeline.errors.ConfigError` whose message names the file, the field
and what was expected.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)

from pipeline import sinktypes
from pipeline.apiconfig import ApiConfig
from pipeline.configrefs import interpolate_tree
from pipeline.errors import ConfigError
from pipeline.focusconfig import FocusConfig, derived_name, expand
from pipeline.sourceconfig import ConnectConfig, KafkaConfig, SourceConfig
from pipeline.viewconfig import ViewConfig, ViewSinkOptions

CONFIG_ENV = "READSIDE_CONFIG"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


class WorkerConfig(_Model):
    batch_size: int = Field(2000, ge=1)
    batch_timeout_ms: int = Field(20, ge=0)
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
    #: Seconds between two looks at the load marks of the worker's views in
    #: its stores (:mod:`pipeline.loaded`): a store that lost a view is
    #: reported, and one loaded again seen whole, within this. Each look is
    #: one request per view and store.
    load_mark_check_s: float = Field(10.0, gt=0)
    #: Seconds between two looks at how the source captures the worker's
    #: tables (:mod:`pipeline.publication`): the publication, the
    #: connector's config, REPLICA IDENTITY FULL and row security. Each look
    #: is a few catalog queries and two requests to Connect.
    source_check_s: float = Field(60.0, gt=0)


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
    kafka_controller_port: int = 19093
    #: the broker's SASL_PLAINTEXT listener; its PLAIN user and password are
    #: kept in ``<data_dir>/kafka/sasl-client.json``
    kafka_sasl_port: int = 19094
    #: the broker's SASL_SSL listener (the stack's certificate; mechanisms
    #: PLAIN and SCRAM-SHA-256/512 on both SASL listeners, the SCRAM user's
    #: password in ``<data_dir>/kafka/scram-client.json``)
    kafka_ssl_port: int = 19095
    connect_port: int = 18083
    redis_port: int = 16379
    #: Redis's TLS port (the stack's certificate); its ACL user's password is
    #: kept in ``<data_dir>/redis/acl-client.json``
    redis_tls_port: int = 16380
    elasticsearch_port: int = 19200
    ferretdb_port: int = 27027
    #: FerretDB's TLS listener (the stack's certificate, no client
    #: certificate asked); its clients log in as the plain port's do
    ferretdb_tls_port: int = 27028
    ferretdb_backend_port: int = 15433
    registry_port: int = 18081
    #: Keycloak, the registry's login server (pipeline.stack.keycloak); its
    #: health endpoints answer one above
    keycloak_port: int = 18180
    #: the optional OpenSearch node (``readside stack up --with opensearch``);
    #: its transport listens 100 above
    opensearch_port: int = 19201


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
    def _names(self) -> Config:
        """Names of sinks, views and focuses go into keys, index names, URLs,
        metrics, logs and HTTP headers: none is empty or holds a control
        character."""
        for field, entries in (
            ("sinks", self.sinks),
            ("views", self.views),
            ("focuses", self.focuses),
        ):
            for name in entries:
                if not name.strip() or any(c < " " or c == "\x7f" for c in name):
                    raise ValueError(
                        f"{field}: the name {name!r} is empty or holds a control "
                        "character"
                    )
        return self

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


def config_file(path: str | Path | None = None) -> Path:
    """The file :func:`load` reads: ``path``, else ``$READSIDE_CONFIG``,
    else ``readside.yaml``."""
    return Path(path or os.environ.get(CONFIG_ENV) or "readside.yaml")


def _read(path: str | Path | None) -> tuple[Path, dict[str, Any]]:
    """The parsed, not yet interpolated, YAML of the configuration file."""
    chosen = config_file(path)
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
    return chosen, data


def _interpolated(chosen: Path, data: Any, env: dict[str, str] | None, at: str) -> Any:
    try:
        return interpolate_tree(data, env, chosen.resolve().parent, at)
    except ConfigError as exc:
        raise ConfigError(f"{chosen}: {exc}") from exc


def load_stack(
    path: str | Path | None = None, env: dict[str, str] | None = None
) -> StackConfig:
    """Only the ``stack`` section: ``readside stack`` needs nothing else, and
    the rest may name secrets (``${file:.readside/secrets/...}``) that only
    the stack's first start makes."""
    chosen, data = _read(path)
    stack = _interpolated(chosen, data.get("stack") or {}, env, "stack")
    try:
        return StackConfig.model_validate(stack)
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
    chosen, data = _read(path)
    return parse(_interpolated(chosen, data, env, ""), str(chosen))
