"""What a MongoDB sink reads: documents by id, ids, and sites' filters.

Reads go to the live generation's collection; tombstones read as deleted
documents and never match a filter. :func:`mongo_query` is the filter of
:class:`~connectors.reads.Filterable`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pymongo.errors as perr

from connectors.base import Stored
from connectors.mongodb.decimals import from_decimal128, query_number
from connectors.mongodb.store import (
    FETCH_CHUNK,
    RESERVED,
    Doc,
    MongoStore,
    classify,
)
from connectors.reads import Bound, Condition, Eq, Found, Sort, instant_text

_OPS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


def _same(value: Any) -> Any:
    return value


def _bound(op: str, bound: Bound, number: Callable[[Any], Any]) -> Any:
    if not isinstance(bound, str):
        return number(bound)
    if len(bound) == 10 and op in ("gt", "lte"):
        return instant_text(bound)
    return bound


def _strip(raw: Mapping[str, Any]) -> Stored:
    version = int(raw["_v"])
    if raw.get("_deleted"):
        return Stored(version, None)
    return Stored(version, {k: v for k, v in raw.items() if k not in RESERVED})


class MongoReads(MongoStore):
    """Reads by id and the filters of sites (any condition: no index needed)."""

    filter_first = False  # answers any filter, after a covering index

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        try:
            coll = self.collection(view)
            decimal = self.decimal128(view)
            for start in range(0, len(ids), FETCH_CHUNK):
                chunk = list(ids[start : start + FETCH_CHUNK])
                for raw in coll.find({"_id": {"$in": chunk}}):
                    stored = _strip(raw)
                    if decimal and stored.doc is not None:
                        stored = Stored(stored.version, from_decimal128(stored.doc))
                    out[str(raw["_id"])] = stored
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        return out

    def ids(self, view: str) -> set[str]:
        try:
            cursor = self.collection(view).find({"_deleted": {"$ne": True}}, {"_id": 1})
            return {str(raw["_id"]) for raw in cursor}
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    # -- queries of sites (connectors.reads.Filterable) -------------------------

    def covers(self, view: str, where: dict[str, Condition], sort: Sort = ()) -> bool:
        """Any validated condition and order: a query needs no index."""
        return True

    def filter(
        self, view: str, where: dict[str, Condition], limit: int, sort: Sort = ()
    ) -> Found:
        """One ``find`` with the translated filter, sorted by ``sort`` then
        id, ``limit`` documents; the count is theirs. Text sorts as text: a
        numeric sorts as a number only with ``numeric: decimal128``; instants,
        ISO 8601 text in UTC, sort in time order."""
        keys = [(name, -1 if order == "desc" else 1) for name, order in sort]
        try:
            decimal = self.decimal128(view)
            query = mongo_query(where, decimal)
            cursor = self.collection(view).find(query)
            cursor = cursor.sort([*keys, ("_id", 1)]).limit(limit)
            docs = {
                str(raw["_id"]): {k: v for k, v in raw.items() if k not in RESERVED}
                for raw in cursor
            }
            if decimal:
                docs = {i: from_decimal128(d) for i, d in docs.items()}
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        return docs, len(docs)


def mongo_query(where: dict[str, Condition], decimal: bool = False) -> Doc:
    """The MongoDB filter of validated conditions, tombstones excluded.

    Instants compare as readside writes them, ISO 8601 text in UTC, whose
    order is time order: a date bound stays a date for ``gte`` and ``lt``
    and becomes its midnight for ``gt`` and ``lte``, so it compares right
    with both dates and timestamps. With ``decimal`` (a view whose numerics
    are ``Decimal128``), floats become ``Decimal128`` of their shortest text.
    """
    number = query_number if decimal else _same
    query: Doc = {}
    for name, cond in where.items():
        if isinstance(cond, Eq):
            query[name] = number(cond.value)
        else:
            query[name] = {_OPS[op]: _bound(op, b, number) for op, b in cond.bounds}
    query["_deleted"] = {"$ne": True}
    return query
