"""Elasticsearch sink: one index per view behind an alias, external versions.

The sink of the store :mod:`connectors.elasticsearch`: writes, generations
and the searches of sites (:class:`~connectors.reads.Searchable`); routed
views are in :mod:`connectors.elasticsearch.routing`.

Each view lives in the concrete index ``{index_prefix}{target.name}-000001``
behind the alias ``{index_prefix}{target.name}``; writes and reads go through
the alias, so a rebuild fills the next generation ``-000002`` beside it and
moves the alias in one atomic ``_aliases`` call (:class:`~connectors.base.Generations`).
While a rebuild fills it, the alias ``{alias}.mirror`` names the new index:
every write then goes there first (``require_alias``, so a write that races
the switch never creates an index), then through the alias.

Versions: every write is an ``index`` action with ``version_type=external`` and
``version=op.version``. ``external`` rather than ``external_gte``: an equal
version carries equal content (docs/design.md: the version rule), so skipping it changes
nothing, costs no reindex, and reports replays as stale (409) like the other
sinks. A conflict (409) is a stale write, not an error.

Deletes are stored as tombstone documents ``{"_deleted": true}`` at the
delete's version instead of ES deletes: an ES delete keeps its version only
for ``index.gc_deletes`` (60 s), after which a late older write would bring the
document back. So **queries of sites must filter tombstones out**, e.g.
``{"bool": {"must_not": {"term": {"_deleted": true}}}}``; the field is mapped
as ``boolean`` in every index this sink creates. Purging old tombstones is a
maintenance job (delete-by-query on ``_deleted`` older than the longest replay).

Target options: ``mappings`` (else dynamic), ``settings`` (merged over
1 shard, 0 replicas), ``routing_field`` (a field of the document whose value
routes it; deletes look the routing up, which costs a refresh, and upserts
read the copy on their id's shard first: see
:mod:`connectors.elasticsearch.routing`).

Durability: Elasticsearch answers a bulk once each item is in the translog of
the primary and of every in-sync replica, fsynced by default
(``index.translog.durability: request``; ``async`` in ``settings`` trades that
for speed and can lose acknowledged writes). ``refresh`` only makes writes
searchable sooner; it adds no durability. The sink setting
``wait_for_active_shards`` makes each bulk wait, up to half the request
timeout, for that many active copies of each shard before writing; short of
them the items fail with 503, a transient error.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import elastic_transport
import elasticsearch
from elasticsearch import helpers

from connectors.base import (
    Stored,
    StoreSink,
    ViewTarget,
    WriteResult,
    mirrored,
)
from connectors.elasticsearch import ElasticsearchSinkConfig, routing
from connectors.reads import Found, Scalar, SearchRefused
from pipeline.errors import BadRecord, FatalError, ReadsideError, TransientError
from pipeline.events import Delete, DocumentOp, Upsert

logger = logging.getLogger(__name__)

DELETED = "_deleted"
_MAX_BULK_BYTES = 20 * 1024 * 1024
_TOMBSTONE = json.dumps({DELETED: True})
_ERRORS = (elastic_transport.TransportError, elasticsearch.ApiError)


def classify(exc: Exception) -> ReadsideError:
    """Map an elasticsearch-py exception onto a readside error class, by type."""
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, elasticsearch.ApiError):
        status = exc.meta.status
        if status in (401, 403):
            return FatalError(f"elasticsearch: not authorized ({status}): {exc}")
        if status in (408, 429) or status >= 500:
            return TransientError(f"elasticsearch: status {status}: {exc}")
        return FatalError(f"elasticsearch: status {status}: {exc}")
    if isinstance(exc, elastic_transport.SerializationError):
        return FatalError(f"elasticsearch: {exc}")
    if isinstance(exc, elastic_transport.TransportError):
        return TransientError(f"elasticsearch: {type(exc).__name__}: {exc}")
    return FatalError(f"elasticsearch: {type(exc).__name__}: {exc}")


def _reason(error: Mapping[str, Any]) -> str:
    text = f"{error.get('type')}: {error.get('reason')}"
    cause = error.get("caused_by")
    if isinstance(cause, Mapping):
        text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
    return text


class ElasticsearchSink(StoreSink[ElasticsearchSinkConfig]):
    """Keeps views as Elasticsearch documents, guarded by external versions.

    Args:
        name: the sink's name in the configuration.
        cfg: hosts, credentials, index prefix and refresh policy.
        targets: view name -> index name and options (``mappings``,
            ``settings``, ``routing_field``).
    """

    store = "elasticsearch"
    driver_errors = _ERRORS
    classify = staticmethod(classify)

    def __init__(
        self,
        name: str,
        cfg: ElasticsearchSinkConfig,
        targets: Mapping[str, ViewTarget],
    ) -> None:
        super().__init__(name, cfg, targets)
        self._client: elasticsearch.Elasticsearch | None = None

    @property
    def client(self) -> elasticsearch.Elasticsearch:
        if self._client is None:
            auth = None
            if self.cfg.username is not None and self.cfg.password is not None:
                auth = (self.cfg.username, self.cfg.password.get_secret_value())
            self._client = elasticsearch.Elasticsearch(
                self.cfg.hosts,
                basic_auth=auth,
                request_timeout=self.cfg.timeout_s,
                max_retries=1,
                retry_on_timeout=False,
            )
        return self._client

    def alias(self, view: str) -> str:
        """The alias that sites query for ``view``."""
        return f"{self.cfg.index_prefix}{self._target(view).name}"

    def _routing_field(self, view: str) -> str | None:
        field = self.targets[view].options.get("routing_field")
        return str(field) if field else None

    # -- lifecycle --------------------------------------------------------

    def open(self) -> None:
        try:
            for view, target in self.targets.items():
                self._ensure_index(view, target)
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc
        logger.info(
            "elasticsearch sink open sink=%s views=%d", self.name, len(self.targets)
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
        mappings = dict(target.options.get("mappings") or {"dynamic": True})
        properties = dict(mappings.get("properties") or {})
        properties[DELETED] = {"type": "boolean"}
        mappings["properties"] = properties
        settings = {"number_of_shards": 1, "number_of_replicas": 0}
        settings.update(target.options.get("settings") or {})
        self.client.indices.create(
            index=index, mappings=mappings, settings=settings, aliases=dict(aliases)
        )

    # -- generations --------------------------------------------------------
    # Generation n of a view is the index ``{alias}-{n:06d}``; the alias names
    # the live one, and one ``_aliases`` call moves it (atomic in ES).

    def generation(self, view: str) -> int:
        alias = self.alias(view)
        try:
            found = self.client.indices.get_alias(name=alias)
        except elasticsearch.NotFoundError:
            raise FatalError(
                f"elasticsearch sink {self.name}: no alias {alias} (is the view "
                "written yet, or an index of that name in its place?)"
            ) from None
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc
        gens = []
        for index in found.body:
            head, _, number = str(index).rpartition("-")
            if head != alias or not number.isdigit():
                raise FatalError(
                    f"elasticsearch sink {self.name}: alias {alias} names index "
                    f"{index}, not one of its generations ({alias}-NNNNNN)"
                )
            gens.append(int(number))
        return max(gens)

    def _mirror(self, view: str) -> str:
        """The alias of the generation a rebuild fills (absent: none)."""
        return f"{self.alias(view)}.mirror"

    def _generation_index(self, view: str, gen: int) -> str:
        return f"{self.alias(view)}-{gen:06d}"

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        # Its "alias" is the concrete index, which exists before it is used.
        target = self.targets[view]
        return ViewTarget(view, f"{target.name}-{gen:06d}", target.options)

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        index = self._generation_index(view, gen)
        mirror = self._mirror(view)
        try:
            self.client.indices.delete(index=index, ignore_unavailable=True)
            if self.client.indices.exists_alias(name=mirror):
                self.client.indices.delete_alias(index="_all", name=mirror)
            self._create_index(index, self.targets[view], {mirror: {}})
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc
        logger.info("elasticsearch generation created index=%s", index)

    def switch_generation(self, view: str, gen: int) -> None:
        alias = self.alias(view)
        index = self._generation_index(view, gen)
        try:
            held = list(self.client.indices.get_alias(name=alias).body)
            actions: list[dict[str, Any]] = [
                {"remove": {"index": old, "alias": alias}}
                for old in held
                if old != index
            ]
            actions.append(
                {"add": {"index": index, "alias": alias, "is_write_index": True}}
            )
            mirror = self._mirror(view)
            if self.client.indices.exists_alias(name=mirror, index=index):
                actions.append({"remove": {"index": index, "alias": mirror}})
            self.client.indices.update_aliases(actions=actions)
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc
        logger.info("elasticsearch alias switched alias=%s index=%s", alias, index)

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        try:
            self.client.indices.delete(
                index=self._generation_index(view, gen), ignore_unavailable=True
            )
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- writes -----------------------------------------------------------

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        routes = self._delete_routes(ready)
        views = {op.view for op in ready}
        mirror = {
            v for v in views if self.client.indices.exists_alias(name=self._mirror(v))
        }
        if not mirror:
            return self._write_ops(ready, routes, result, False)
        ahead = [op for op in ready if op.view in mirror]
        into = self._write_ops(ahead, routes, WriteResult(), True)
        return mirrored(into, self._write_ops(ready, routes, result, False))

    def _write_ops(
        self,
        ready: list[DocumentOp],
        routes: Mapping[str, str],
        result: WriteResult,
        mirror: bool,
    ) -> WriteResult:
        """Bulk-write ``ready`` through the alias (or the mirror alias).

        In a routed view, an upsert first meets any copy of its id stored
        under another routing (:mod:`connectors.elasticsearch.routing`).
        """
        lines: list[str] = []
        sent: list[DocumentOp] = []
        size = 0
        others = self._other_copies(ready, mirror)
        removals: list[tuple[DocumentOp, str]] = []
        for op in ready:
            other = others.get((op.view, op.doc_id))
            if other is not None and other.version >= op.version:
                result.stale += 1  # a newer copy under another routing
                continue
            try:
                pair = self._action(op, routes, mirror)
            except BadRecord as exc:
                result.rejected.append((op, str(exc)))
                continue
            if other is not None:
                index = self._mirror(op.view) if mirror else self.alias(op.view)
                removals.append((op, routing.removal(index, op, other)))
            if sent and size + len(pair[1]) > _MAX_BULK_BYTES:
                result.merge(self._bulk(lines, sent, mirror))
                lines, sent, size = [], [], 0
            lines += pair
            sent.append(op)
            size += len(pair[1])
        if sent:
            result.merge(self._bulk(lines, sent, mirror))
        # An old copy goes only once its upsert is stored (or lost to a newer
        # version): a refused upsert must leave the tombstone.
        refused = {id(op) for op, _why in result.rejected}
        lines = [line for op, line in removals if id(op) not in refused]
        routing.remove_copies(self.client, lines, self._bulk_kwargs())
        return result

    def _other_copies(
        self, ops: Sequence[DocumentOp], mirror: bool
    ) -> dict[tuple[str, str], routing.Copy]:
        """Copies that upserts of routed views must win over, by (view, id)."""
        by_view: dict[str, list[Upsert]] = {}
        for op in ops:
            if isinstance(op, Upsert) and self._routing_field(op.view):
                by_view.setdefault(op.view, []).append(op)
        out: dict[tuple[str, str], routing.Copy] = {}
        for view, ups in by_view.items():
            field = self._routing_field(view)
            assert field is not None
            alias = self._mirror(view) if mirror else self.alias(view)
            found = routing.other_copies(self.client, alias, field, ups)
            out.update({(view, doc_id): c for doc_id, c in found.items()})
        return out

    def _action(
        self, op: DocumentOp, routes: Mapping[str, str], mirror: bool
    ) -> tuple[str, str]:
        meta: dict[str, Any] = {
            "_index": self._mirror(op.view) if mirror else self.alias(op.view),
            "_id": op.doc_id,
            "version": op.version,
            "version_type": "external",
        }
        field = self._routing_field(op.view)
        if isinstance(op, Delete):
            source = _TOMBSTONE
            if field and op.doc_id in routes:
                meta["routing"] = routes[op.doc_id]
        else:
            if DELETED in op.doc:
                raise BadRecord("contract", f"field {DELETED!r} is reserved")
            try:
                source = json.dumps(op.doc, ensure_ascii=False)
            except (TypeError, ValueError) as exc:
                raise BadRecord("encode", f"not JSON serializable: {exc}") from exc
            if field and op.doc.get(field) is not None:
                meta["routing"] = str(op.doc[field])
        return json.dumps({"index": meta}), source

    def _bulk_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"refresh": True} if self.cfg.refresh else {}
        if self.cfg.wait_for_active_shards is not None:
            kwargs["wait_for_active_shards"] = self.cfg.wait_for_active_shards
            # Answer (503 per item, transient) before the client gives up.
            kwargs["timeout"] = f"{max(1, int(self.cfg.timeout_s * 500))}ms"
        return kwargs

    def _bulk(
        self, lines: list[str], sent: list[DocumentOp], mirror: bool
    ) -> WriteResult:
        kwargs = self._bulk_kwargs()
        if mirror:  # never create an index when the switch removed the alias
            kwargs["require_alias"] = True
        # Lines are pre-serialized NDJSON, which the serializer passes through.
        resp = self.client.bulk(operations=lines, **kwargs)  # type: ignore[arg-type]
        result = WriteResult()
        transient: list[str] = []
        for op, item in zip(sent, resp["items"], strict=True):
            info = item["index"]
            status = int(info["status"])
            if status < 300:
                result.applied += 1
            elif status == 409:
                result.stale += 1
            elif mirror and status == 404:
                pass  # the switch ended the mirroring; the live write follows
            elif status in (401, 403):
                raise FatalError(
                    f"elasticsearch: not authorized: {_reason(info['error'])}"
                )
            elif status == 429 or status >= 500:
                transient.append(f"{status} {_reason(info.get('error', {}))}")
            else:
                result.rejected.append((op, _reason(info.get("error", {}))))
        if result.rejected:
            result = self._settle_stale_rejections(result, mirror)
        if transient:
            # The rest of the batch is applied; a retry is idempotent.
            raise TransientError(
                f"elasticsearch: {len(transient)} bulk item(s) failed, first: "
                f"{transient[0]}"
            )
        return result

    def _settle_stale_rejections(
        self, result: WriteResult, mirror: bool
    ) -> WriteResult:
        """Count a refused op as stale when a version at least as new is stored.

        Elasticsearch parses a document before it checks the version, so a
        stale op whose body the mapping refuses comes back as a 400, not a
        409. Dead-lettering it would be wrong (nothing is lost: the stored
        document is newer) and its replay would fail forever.
        """
        by_view: dict[str, list[DocumentOp]] = {}
        for op, _why in result.rejected:
            by_view.setdefault(op.view, []).append(op)
        stored: dict[tuple[str, str], int] = {}
        for view, ops in by_view.items():
            index = self._mirror(view) if mirror else self.alias(view)
            if mirror and not self.client.indices.exists_alias(name=index):
                # switched meanwhile: the live write that follows settles them
                result.rejected = [r for r in result.rejected if r[0].view != view]
                continue
            found = self._fetch(view, [o.doc_id for o in ops], index)
            for doc_id, have in found.items():
                stored[(view, doc_id)] = have.version
        kept: list[tuple[DocumentOp, str]] = []
        for op, why in result.rejected:
            if stored.get((op.view, op.doc_id), -1) >= op.version:
                result.stale += 1
            else:
                kept.append((op, why))
        result.rejected = kept
        return result

    def _delete_routes(self, ops: Sequence[DocumentOp]) -> dict[str, str]:
        """Routing of documents about to be deleted in routed views."""
        routes: dict[str, str] = {}
        by_view: dict[str, list[str]] = {}
        for op in ops:
            if isinstance(op, Delete) and self._routing_field(op.view):
                by_view.setdefault(op.view, []).append(op.doc_id)
        for view, ids in by_view.items():
            for hit in self._search_ids(view, ids):
                if "_routing" in hit:
                    routes[hit["_id"]] = hit["_routing"]
        return routes

    # -- reads ------------------------------------------------------------

    def _search_ids(
        self, view: str, ids: Sequence[str], alias: str | None = None
    ) -> list[dict[str, Any]]:
        """Find documents by id on every shard (routed views), read-your-writes."""
        alias = alias or self.alias(view)
        self.client.indices.refresh(index=alias)
        hits: list[dict[str, Any]] = []
        for start in range(0, len(ids), 1000):
            chunk = list(ids[start : start + 1000])
            resp = self.client.search(
                index=alias,
                query={"ids": {"values": chunk}},
                size=len(chunk),
                version=True,
                allow_partial_search_results=False,
            )
            hits += resp["hits"]["hits"]
        return hits

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        return self._fetch(view, ids, self.alias(view))

    def _fetch(self, view: str, ids: Sequence[str], index: str) -> dict[str, Stored]:
        if not ids:
            return {}
        try:
            if self._routing_field(view):
                docs = self._search_ids(view, ids, index)
            else:
                resp = self.client.mget(index=index, ids=list(ids))
                docs = routing.mget_found(resp)
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc
        out: dict[str, Stored] = {}
        for d in docs:
            version = int(d["_version"])
            have = out.get(d["_id"])
            if have is not None and have.version >= version:
                continue  # an old copy of a routed view not yet removed
            source = d.get("_source") or {}
            body = None if source.get(DELETED) else source
            out[d["_id"]] = Stored(version, body)
        return out

    def ids(self, view: str) -> set[str]:
        alias = self.alias(view)
        try:
            self.client.indices.refresh(index=alias)
            hits = helpers.scan(
                self.client,
                index=alias,
                query={"query": {"bool": {"must_not": {"term": {DELETED: True}}}}},
                _source=False,
                size=5000,
                allow_partial_search_results=False,
            )
            return {str(h["_id"]) for h in hits}
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc

    # -- queries of sites (connectors.reads.Searchable) -------------------------

    def search(
        self,
        view: str,
        query: str | None,
        filters: dict[str, Scalar | list[Scalar]],
        sort: list[tuple[str, str]],
        page: int,
        size: int,
    ) -> Found:
        """One search request (:func:`es_body`) through the view's alias."""
        try:
            resp = self.client.search(
                index=self.alias(view),
                from_=(page - 1) * size,
                size=size,
                allow_partial_search_results=False,
                **es_body(query, filters, sort),
            )
        except elasticsearch.BadRequestError as exc:
            raise SearchRefused(f"elasticsearch refused the search: {exc}") from exc
        except _ERRORS as exc:
            raise classify(exc) from exc
        hits = resp["hits"]
        docs = {str(h["_id"]): dict(h.get("_source") or {}) for h in hits["hits"]}
        return docs, int(hits["total"]["value"])

    def refresh(self, view: str) -> None:
        """Make every write acknowledged so far searchable in the view's index."""
        try:
            self.client.indices.refresh(index=self.alias(view))
        except _ERRORS as exc:
            raise classify(exc) from exc

    def drop(self, view: str) -> None:
        """Delete the view's alias and indexes (rebuilds and tests; not in the
        protocol)."""
        alias = self.alias(view)
        try:
            mirror = self._mirror(view)  # an unfinished rebuild's index
            if self.client.indices.exists_alias(name=mirror):
                found = self.client.indices.get_alias(name=mirror)
                self.client.indices.delete(index=",".join(found.keys()))
            if self.client.indices.exists_alias(name=alias):
                found = self.client.indices.get_alias(name=alias)
                self.client.indices.delete(index=",".join(found.keys()))
            elif self.client.indices.exists(index=alias):
                self.client.indices.delete(index=alias)
        except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
            raise classify(exc) from exc


def es_body(
    query: str | None,
    filters: dict[str, Scalar | list[Scalar]],
    sort: list[tuple[str, str]],
) -> dict[str, Any]:
    """The search request: query_string (no leading wildcards), term/terms
    filters, tombstones excluded. Never a script."""
    must: list[dict[str, Any]] = []
    if query is not None:
        must.append(
            {
                "query_string": {
                    "query": query,
                    "allow_leading_wildcard": False,
                    "lenient": True,
                }
            }
        )
    flt = [
        {"terms": {k: v}} if isinstance(v, list) else {"term": {k: v}}
        for k, v in filters.items()
    ]
    body: dict[str, Any] = {
        "query": {
            "bool": {
                "must": must or [{"match_all": {}}],
                "filter": flt,
                "must_not": [{"term": {DELETED: True}}],
            }
        },
        "track_total_hits": True,
    }
    if sort:
        body["sort"] = [{name: {"order": order}} for name, order in sort]
    return body
