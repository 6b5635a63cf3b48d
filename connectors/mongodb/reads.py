"""What a MongoDB sink reads: documents by id, ids, and sites' filters.

Reads go to the live generation's collection; tombstones read as deleted
documents and never match a filter. :func:`mongo_query` is the filter of
:class:`~connectors.reads.Filterable`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pymongo.errors as perr

from connectors.base import Stored
from connectors.mongodb.store import (
    FETCH_CHUNK,
    RESERVED,
    Doc,
    MongoStore,
    classify,
)
from connectors.reads import Condition, Eq, Found

_OPS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


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
            for start in range(0, len(ids), FETCH_CHUNK):
                chunk = list(ids[start : start + FETCH_CHUNK])
                for raw in coll.find({"_id": {"$in": chunk}}):
                    out[str(raw["_id"])] = _strip(raw)
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

    def covers(self, view: str, where: dict[str, Condition]) -> bool:
        """Any validated condition: a query needs no index."""
        return True

    def filter(self, view: str, where: dict[str, Condition], limit: int) -> Found:
        """One ``find`` with the translated filter, sorted by id, ``limit``
        documents; the count is theirs."""
        try:
            query = mongo_query(where)
            cursor = self.collection(view).find(query).sort("_id").limit(limit)
            docs = {
                str(raw["_id"]): {k: v for k, v in raw.items() if k not in RESERVED}
                for raw in cursor
            }
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        return docs, len(docs)


def mongo_query(where: dict[str, Condition]) -> Doc:
    """The MongoDB filter of validated conditions, tombstones excluded."""
    query: Doc = {}
    for name, cond in where.items():
        if isinstance(cond, Eq):
            query[name] = cond.value
        else:
            query[name] = {_OPS[op]: value for op, value in cond.bounds}
    query["_deleted"] = {"$ne": True}
    return query
