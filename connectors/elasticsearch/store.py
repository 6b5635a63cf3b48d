"""The Elasticsearch store's ground the sink's parts share: its client and names.

Each view lives in the concrete index ``{index_prefix}{target.name}-000001``
behind the alias ``{index_prefix}{target.name}``; writes and reads go through
the alias, so a rebuild fills the next generation ``-000002`` beside it
(:mod:`connectors.elasticsearch.generations`). While a rebuild fills it, the
alias ``{alias}.mirror`` names the new index.

Deletes are stored as tombstone documents ``{"_deleted": true}`` (:data:`DELETED`,
see :mod:`connectors.elasticsearch.sink`); the field is mapped as ``boolean``
in every index this module creates.

Target options: ``mappings`` (over those derived from the view's source
column types, :mod:`connectors.elasticsearch.mapping`), ``numeric``
(``double`` or ``scaled_float``) and ``json`` (``dynamic``, ``flattened`` or
``disabled``) for the derived ones, ``settings`` (merged over 1 shard, 0
replicas), ``routing_field`` (see :mod:`connectors.elasticsearch.routing`).

Here: :func:`classify` (the driver's exceptions onto readside's errors) and
:class:`ElasticsearchStore`, the client, the alias and mirror names, and the
indexes' creation, which the writes (:mod:`~connectors.elasticsearch.sink`),
the generations and the reads (:mod:`~connectors.elasticsearch.reads`) build on.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Mapping
from typing import Any

import elastic_transport
import elasticsearch

from connectors.base import StoreSink, ViewTarget
from connectors.elasticsearch import ElasticsearchSinkConfig, mapping
from pipeline.errors import FatalError, ReadsideError, TransientError

logger = logging.getLogger(__name__)

DELETED = "_deleted"
#: The top-level fields no document of a view may carry here: the metadata
#: fields Elasticsearch (or OpenSearch) refuses inside a document ("is a
#: metadata field and cannot be added inside a document"; its index creation
#: refuses a mapping of one), and readside's tombstone flag.
#: :func:`connectors.base.refuse_reserved` refuses such a column.
RESERVED = {
    DELETED: "its tombstones (a document with it true reads as deleted)",
    **{
        name: "its metadata (a document may not carry it)"
        for name in (
            "_id",
            "_index",
            "_routing",
            "_source",
            "_version",
            "_seq_no",
            "_primary_term",
            "_field_names",
            "_ignored",
            "_ignored_source",
            "_nested_path",
            "_doc_count",
            "_tier",
            "_data_stream_timestamp",
        )
    },
}
NUMERIC_MAPPINGS = ("double", "scaled_float")
JSON_MAPPINGS = ("dynamic", "flattened", "disabled")
ERRORS = (elastic_transport.TransportError, elasticsearch.ApiError)


#: The error of a write to an index that is blocked: by an operator
#: (``index.blocks.write`` or ``read_only``, as for a shrink, a clone or a
#: restore) or by the disk's flood-stage watermark. The block is lifted
#: without readside, so what it refuses is retried like a write to a store
#: that is down: never dead-lettered, never taken for a wrong login.
BLOCKED = "cluster_block_exception"


def blocked(error: object) -> bool:
    """Whether ``error`` (the ``error`` object of an answer or of a bulk
    item) is an index block's refusal."""
    return isinstance(error, Mapping) and error.get("type") == BLOCKED


def classify(exc: Exception, store: str = "elasticsearch") -> ReadsideError:
    """Map an elasticsearch-py exception onto a readside error class, by type;
    ``store`` names the store in the message."""
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, elasticsearch.ApiError):
        status = exc.meta.status
        if isinstance(exc.body, Mapping) and blocked(exc.body.get("error")):
            return TransientError(f"{store}: the index is blocked ({status}): {exc}")
        if status in (401, 403):
            return FatalError(f"{store}: not authorized ({status}): {exc}")
        if status in (408, 429) or status >= 500:
            return TransientError(f"{store}: status {status}: {exc}")
        return FatalError(f"{store}: status {status}: {exc}")
    if isinstance(exc, elastic_transport.SerializationError):
        return FatalError(f"{store}: {exc}")
    if isinstance(exc, elastic_transport.TlsError) and _untrusted(exc):
        # a certificate no retry will make trusted
        return FatalError(
            f"{store}: the server's TLS certificate is not trusted (the sink's "
            f"ca_cert, verify): {exc}"
        )
    if isinstance(exc, elastic_transport.TransportError):
        return TransientError(f"{store}: {type(exc).__name__}: {exc}")
    return FatalError(f"{store}: {type(exc).__name__}: {exc}")


def _untrusted(exc: BaseException) -> bool:
    """Whether a certificate verification failure is behind ``exc``."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        if isinstance(err, ssl.SSLCertVerificationError):
            return True
        todo += [err.__cause__, err.__context__]
        todo += [e for e in getattr(err, "errors", ()) if isinstance(e, BaseException)]
    return "certificate verify failed" in str(exc)


def tls_options(cfg: ElasticsearchSinkConfig) -> dict[str, Any]:
    """The TLS options both search clients take (``ca_certs``,
    ``verify_certs``, ``ssl_show_warn``), warning when verification is off."""
    if not cfg.secure:
        return {}
    if not cfg.verify:
        logger.warning(
            "search sink verify: false: the server's TLS certificate and host "
            "name are not checked (hosts=%s)",
            cfg.hosts,
        )
    # (the driver's own warning, on each connection, would only repeat it)
    out: dict[str, Any] = {"verify_certs": cfg.verify, "ssl_show_warn": cfg.verify}
    if cfg.ca_cert is not None:
        out["ca_certs"] = str(cfg.ca_cert)
    return out


class ElasticsearchStore(StoreSink[ElasticsearchSinkConfig]):
    """The client, the names and the indexes of an Elasticsearch sink.

    Args:
        name: the sink's name in the configuration.
        cfg: hosts, credentials, index prefix and refresh policy.
        targets: view name -> index name and options (``mappings``,
            ``settings``, ``routing_field``).
    """

    store = "elasticsearch"
    reserved = RESERVED
    driver_errors = ERRORS
    classify = staticmethod(classify)

    def __init__(
        self,
        name: str,
        cfg: ElasticsearchSinkConfig,
        targets: Mapping[str, ViewTarget],
    ) -> None:
        super().__init__(name, cfg, targets)
        self._client: elasticsearch.Elasticsearch | None = None
        #: the views whose name is an alias (not the concrete index of a
        #: rebuild's pinned sink, or a plain index in its place), by open()
        self._aliased: dict[str, bool] = {}

    def _auth(self) -> tuple[str, str] | None:
        """Basic authentication, when the settings give a user and password."""
        if self.cfg.username is None or self.cfg.password is None:
            return None
        return self.cfg.username, self.cfg.password.get_secret_value()

    @property
    def client(self) -> elasticsearch.Elasticsearch:
        if self._client is None:
            self._client = elasticsearch.Elasticsearch(
                self.cfg.hosts,
                basic_auth=self._auth(),
                request_timeout=self.cfg.timeout_s,
                max_retries=1,
                retry_on_timeout=False,
                **tls_options(self.cfg),
            )
        return self._client

    def alias(self, view: str) -> str:
        """The alias that sites query for ``view``."""
        return f"{self.cfg.index_prefix}{self._target(view).name}"

    def _routing_field(self, view: str) -> str | None:
        field = self.targets[view].options.get("routing_field")
        return str(field) if field else None

    def _mirror(self, view: str) -> str:
        """The alias of the generation a rebuild fills (absent: none)."""
        return f"{self.alias(view)}.mirror"

    def _generation_index(self, view: str, gen: int) -> str:
        return f"{self.alias(view)}-{gen:06d}"

    # -- lifecycle --------------------------------------------------------

    def open(self) -> None:
        self.check_reserved()
        try:
            for view, target in self.targets.items():
                self._ensure_index(view, target)
                # writes through an alias require it: when its index is
                # deleted they must not make a plain one with guessed mappings
                self._aliased[view] = bool(
                    self.client.indices.exists_alias(name=self.alias(view))
                )
        except ERRORS as exc:
            raise self.classify(exc) from exc
        logger.info(
            "%s sink open sink=%s views=%d", self.store, self.name, len(self.targets)
        )

    def _ensure_index(self, view: str, target: ViewTarget) -> None:
        alias = self.alias(view)
        indices = self.client.indices
        if indices.exists_alias(name=alias) or indices.exists(index=alias):
            return
        index = f"{alias}-000001"
        try:
            self._create_index(index, target, {alias: {"is_write_index": True}})
        except elasticsearch.BadRequestError:
            # Another worker may have created it first; anything else is fatal.
            if not indices.exists_alias(name=alias):
                raise
        logger.info("elasticsearch index created index=%s alias=%s", index, alias)

    def _create_index(
        self, index: str, target: ViewTarget, aliases: Mapping[str, Any]
    ) -> None:
        mappings = self._mappings(target)
        mappings["properties"][DELETED] = {"type": "boolean"}
        settings = mapping.index_settings(mappings, target.options.get("settings"))
        self.client.indices.create(
            index=index, mappings=mappings, settings=settings, aliases=dict(aliases)
        )

    def _mappings(self, target: ViewTarget) -> dict[str, Any]:
        """The view's mappings: derived from its source column types
        (:mod:`connectors.elasticsearch.mapping`), the user's over them."""
        opts = target.options
        numeric = str(opts.get("numeric", "double"))
        json = str(opts.get("json", "dynamic"))
        if numeric not in NUMERIC_MAPPINGS or json not in JSON_MAPPINGS:
            raise FatalError(
                f"{self.store} sink {self.name}: view {target.view}: numeric must "
                f"be one of {', '.join(NUMERIC_MAPPINGS)} (got {numeric!r}), json "
                f"one of {', '.join(JSON_MAPPINGS)} (got {json!r})"
            )
        # A view with transforms may rename a reserved column (the shape is
        # the columns'): the field it became is mapped dynamically.
        shape = {k: v for k, v in target.fields().items() if k not in RESERVED}
        return mapping.index_mappings(shape, opts.get("mappings"), numeric, json)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
