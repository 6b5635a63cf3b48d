"""Store-specific reads: filters on MongoDB and Redis indexes, search on
Elasticsearch.

Reads by id need nothing here: every sink's ``fetch`` already reads by id in
one round trip (Redis ``MGET``, MongoDB ``$in``, Elasticsearch ``mget``) and
reports tombstones as ``doc=None``. Every function maps its driver's errors
with the sink module's ``classify``, so a store that is down raises
:class:`~pipeline.errors.TransientError` and the client can fall back.
"""

from __future__ import annotations

import logging
from typing import Any

from query.answer import Doc
from query.errors import QueryError
from query.validate import Condition, Eq, Range, Scalar

logger = logging.getLogger(__name__)

_MONGO_OPS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}
_INTERNAL = ("_id", "_v", "_deleted")


# -- Redis secondary indexes ---------------------------------------------------


def redis_covers(indexes: dict[str, str], where: dict[str, Condition]) -> bool:
    """Whether Redis indexes can answer every condition of ``where``."""
    for name, cond in where.items():
        kind = indexes.get(name)
        if kind == "eq" and isinstance(cond, Eq):
            continue
        if kind == "range" and (isinstance(cond, Range) or _numeric(cond.value)):
            continue
        return False
    return True


def _numeric(value: Scalar) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _score_bounds(cond: Condition) -> tuple[str, str]:
    """ZRANGEBYSCORE min/max arguments for a condition on a range index."""
    if isinstance(cond, Eq):
        return repr(float(cond.value)), repr(float(cond.value))
    low, low_open, high, high_open = float("-inf"), False, float("inf"), False
    for op, value in cond.bounds:
        if op in ("gt", "gte") and (value > low or (value == low and op == "gt")):
            low, low_open = value, op == "gt"
        if op in ("lt", "lte") and (value < high or (value == high and op == "lt")):
            high, high_open = value, op == "lt"

    def text(v: float, open_: bool) -> str:
        if v in (float("inf"), float("-inf")):
            return "+inf" if v > 0 else "-inf"
        return ("(" if open_ else "") + repr(v)

    return text(low, low_open), text(high, high_open)


def redis_filter(
    sink: Any, view: str, where: dict[str, Condition], limit: int
) -> tuple[dict[str, Doc], int]:
    """Ids from the view's indexes (one pipelined round trip), then the
    documents (one ``MGET``). Returns (docs by id, number of matches)."""
    import redis.exceptions as rex

    from connectors.redis_sink import classify

    indexes: dict[str, str] = sink.indexes(view)
    try:
        pipe = sink.client.pipeline(transaction=False)
        eq_keys = [
            sink.index_key(view, name, cond.value)
            for name, cond in where.items()
            if indexes[name] == "eq" and isinstance(cond, Eq)
        ]
        if eq_keys:
            pipe.sinter(eq_keys)
        for name, cond in where.items():
            if indexes[name] == "range":
                low, high = _score_bounds(cond)
                pipe.zrangebyscore(sink.index_key(view, name), low, high)
        results = pipe.execute()
    except rex.RedisError as exc:
        raise classify(exc) from exc
    ids: set[str] = set(results[0])
    for more in results[1:]:
        ids &= set(more)
    ordered = sorted(ids)
    stored = sink.fetch(view, ordered[:limit])
    docs = {i: s.doc for i, s in stored.items() if s.doc is not None}
    return docs, len(ordered)


# -- MongoDB ---------------------------------------------------------------------


def mongo_query(where: dict[str, Condition]) -> dict[str, Any]:
    """The MongoDB filter of validated conditions, tombstones excluded."""
    query: dict[str, Any] = {}
    for name, cond in where.items():
        if isinstance(cond, Eq):
            query[name] = cond.value
        else:
            query[name] = {_MONGO_OPS[op]: value for op, value in cond.bounds}
    query["_deleted"] = {"$ne": True}
    return query


def mongo_filter(
    sink: Any, view: str, where: dict[str, Condition], limit: int
) -> tuple[dict[str, Doc], int]:
    """One ``find`` with the translated filter, sorted by id, ``limit`` docs."""
    import pymongo.errors as perr

    from connectors.mongodb_sink import classify

    try:
        cursor = sink.collection(view).find(mongo_query(where)).sort("_id").limit(limit)
        docs = {
            str(raw["_id"]): {k: v for k, v in raw.items() if k not in _INTERNAL}
            for raw in cursor
        }
    except perr.PyMongoError as exc:
        raise classify(exc) from exc
    return docs, len(docs)


# -- Elasticsearch -----------------------------------------------------------------


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
                "must_not": [{"term": {"_deleted": True}}],
            }
        },
        "track_total_hits": True,
    }
    if sort:
        body["sort"] = [{name: {"order": order}} for name, order in sort]
    return body


def es_search(
    sink: Any, view: str, body: dict[str, Any], page: int, size: int
) -> tuple[dict[str, Doc], int]:
    """One search request. A request Elasticsearch refuses (400: bad query
    syntax, a sort on a text field) is the caller's error: QueryError."""
    import elastic_transport
    import elasticsearch

    from connectors.elasticsearch_sink import classify

    try:
        resp = sink.client.search(
            index=sink.alias(view),
            from_=(page - 1) * size,
            size=size,
            allow_partial_search_results=False,
            **body,
        )
    except elasticsearch.BadRequestError as exc:
        raise QueryError("query", f"elasticsearch refused the search: {exc}") from exc
    except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
        raise classify(exc) from exc
    hits = resp["hits"]
    docs = {str(h["_id"]): dict(h.get("_source") or {}) for h in hits["hits"]}
    return docs, int(hits["total"]["value"])


def es_refresh(sink: Any, view: str) -> None:
    """Make every write acknowledged so far searchable in the view's index."""
    import elastic_transport
    import elasticsearch

    from connectors.elasticsearch_sink import classify

    try:
        sink.client.indices.refresh(index=sink.alias(view))
    except (elastic_transport.TransportError, elasticsearch.ApiError) as exc:
        raise classify(exc) from exc
