"""What an Elasticsearch sink reads: documents by id, ids, and sites' searches.

Reads go through the view's alias; tombstones
(:data:`~connectors.elasticsearch.store.DELETED`) read as deleted documents
and never match a search. :func:`es_body` is the
search request of :class:`~connectors.reads.Searchable`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import elasticsearch
from elasticsearch import helpers

from connectors.base import Stored
from connectors.elasticsearch import routing
from connectors.elasticsearch.store import (
    DELETED,
    ERRORS,
    ElasticsearchStore,
)
from connectors.reads import (
    Found,
    Range,
    SearchFilter,
    SearchRefused,
    instant_text,
)


class ElasticsearchReads(ElasticsearchStore):
    """Reads by id (every shard of a routed view) and searches of sites."""

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

    def _scan(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        """Every hit of a scrolled search (the driver's helper)."""
        return helpers.scan(self.client, **kwargs)

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
        except ERRORS as exc:
            raise self.classify(exc) from exc
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
            self._refresh_readable(alias)
            hits = self._scan(
                index=alias,
                query={"query": {"bool": {"must_not": {"term": {DELETED: True}}}}},
                _source=False,
                size=5000,
                allow_partial_search_results=False,
            )
            return {str(h["_id"]) for h in hits}
        except ERRORS as exc:
            raise self.classify(exc) from exc

    # -- queries of sites (connectors.reads.Searchable) -------------------------

    def search(
        self,
        view: str,
        query: str | None,
        filters: dict[str, SearchFilter],
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
            raise SearchRefused(f"{self.store} refused the search: {exc}") from exc
        except ERRORS as exc:
            raise self.classify(exc) from exc
        hits = resp["hits"]
        docs = {str(h["_id"]): dict(h.get("_source") or {}) for h in hits["hits"]}
        return docs, int(hits["total"]["value"])

    def refresh(self, view: str) -> None:
        """Make every write acknowledged so far searchable in the view's index."""
        try:
            self._refresh_readable(self.alias(view))
        except ERRORS as exc:
            raise self.classify(exc) from exc

    def _refresh_readable(self, alias: str) -> None:
        """Refresh ``alias`` once every shard of it can be read: a search of
        no hits answers at once (an error) when one cannot, where a refresh
        waited for the shard until the request timed out (30 s)."""
        self.client.search(index=alias, size=0, allow_partial_search_results=False)
        self.client.indices.refresh(index=alias)


def _filter(name: str, value: SearchFilter) -> dict[str, Any]:
    """One filter clause: ``term``, ``terms`` or ``range`` (an instant as a
    full timestamp: a date bound means its midnight, UTC, in every store)."""
    if isinstance(value, Range):
        bounds = {
            op: instant_text(b) if isinstance(b, str) else b for op, b in value.bounds
        }
        return {"range": {name: bounds}}
    if isinstance(value, list):
        return {"terms": {name: value}}
    return {"term": {name: value}}


def es_body(
    query: str | None,
    filters: dict[str, SearchFilter],
    sort: list[tuple[str, str]],
) -> dict[str, Any]:
    """The search request: query_string (no leading wildcards), term, terms
    and range filters, tombstones excluded. Never a script."""
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
    flt = [_filter(k, v) for k, v in filters.items()]
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
