"""Elasticsearch sink: one index per view behind an alias, external versions.

The sink of the store :mod:`connectors.elasticsearch`: writes, generations
and the searches of sites (:class:`~connectors.reads.Searchable`); routed
views are in :mod:`connectors.elasticsearch.routing`. This module holds the
writes; the client and the index names are in
:mod:`connectors.elasticsearch.store`, the generations in
:mod:`connectors.elasticsearch.generations`, reads and searches in
:mod:`connectors.elasticsearch.reads`.

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

from connectors.base import WriteResult, mirrored
from connectors.elasticsearch import routing
from connectors.elasticsearch.generations import ElasticsearchGenerations
from connectors.elasticsearch.reads import ElasticsearchReads
from connectors.elasticsearch.store import DELETED, blocked
from pipeline.errors import BadRecord, FatalError, TransientError
from pipeline.events import Delete, DocumentOp, Upsert
from pipeline.jsonforms import document_json

logger = logging.getLogger(__name__)

_MAX_BULK_BYTES = 20 * 1024 * 1024
_ITEM_FIELDS = ["items.*.status", "items.*.error"]
_TOMBSTONE = json.dumps({DELETED: True})


def _reason(error: Mapping[str, Any]) -> str:
    text = f"{error.get('type')}: {error.get('reason')}"
    cause = error.get("caused_by")
    if isinstance(cause, Mapping):
        text += f" (caused by {cause.get('type')}: {cause.get('reason')})"
    return text


class ElasticsearchSink(ElasticsearchGenerations, ElasticsearchReads):
    """Keeps views as Elasticsearch documents, guarded by external versions.

    Its constructor is :class:`~connectors.elasticsearch.store.ElasticsearchStore`'s.
    """

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
                source = document_json(op.doc)
            except (TypeError, ValueError) as exc:
                raise BadRecord("encode", f"not JSON serializable: {exc}") from exc
            if field and op.doc.get(field) is not None:
                meta["routing"] = str(op.doc[field])
        return document_json({"index": meta}), source

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
        # Never create an index: when the switch removed the mirror alias, or
        # when the index behind a view's alias was deleted.
        if mirror or all(self._aliased.get(op.view, False) for op in sent):
            kwargs["require_alias"] = True
        # Lines are pre-serialized NDJSON, which the serializer passes through.
        # Of each item only its status and error are read: the answer holds
        # nothing else (a fifth of its size, parsed that much faster).
        resp = self.client.bulk(
            operations=lines,  # type: ignore[arg-type]
            filter_path=_ITEM_FIELDS,
            **kwargs,
        )
        result = WriteResult()
        transient: list[str] = []
        gone: set[str] = set()
        for op, item in zip(sent, resp["items"], strict=True):
            info = item["index"]
            status = int(info["status"])
            if status < 300:
                result.applied += 1
            elif status == 409:
                result.stale += 1
            elif mirror and status == 404:
                pass  # the switch ended the mirroring; the live write follows
            elif status == 404:
                gone.add(op.view)  # no alias: its index was deleted
            elif blocked(info.get("error")) or status == 429 or status >= 500:
                transient.append(f"{status} {_reason(info.get('error', {}))}")
            elif status in (401, 403):
                raise FatalError(
                    f"{self.store}: not authorized: {_reason(info['error'])}"
                )
            else:
                result.rejected.append((op, _reason(info.get("error", {}))))
        if result.rejected:
            result = self._settle_stale_rejections(result, mirror)
        if gone:
            self._index_gone(sorted(gone))
        if transient:
            # The rest of the batch is applied; a retry is idempotent.
            raise TransientError(
                f"{self.store}: {len(transient)} bulk item(s) failed, first: "
                f"{transient[0]}"
            )
        return result

    def _index_gone(self, views: list[str]) -> None:
        """Make the deleted indexes of ``views`` again, empty, from their
        mappings, and have the batch retried into them. Their earlier
        documents are gone: the worker reports the view
        (:mod:`pipeline.loaded`) until ``readside snapshot`` loads it.

        Raises:
            TransientError: always, once the indexes are there again.
            FatalError: a plain index holds a view's alias name.
        """
        for view in views:
            alias = self.alias(view)
            if not self.client.indices.exists_alias(name=alias):
                if self.client.indices.exists(index=alias):
                    raise FatalError(
                        f"{self.store} sink {self.name}: view {view}: an index "
                        f"named {alias} stands where its alias should be; "
                        "delete it, then load the view (readside snapshot "
                        f"{view} --sink {self.name})"
                    )
                self._ensure_index(view, self._target(view))
        raise TransientError(
            f"{self.store}: the index of view(s) {', '.join(views)} was deleted; "
            "made again empty, the batch is retried into it"
        )

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
