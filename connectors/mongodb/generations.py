"""Generations of a MongoDB view, for ``snapshot --rebuild``.

While a rebuild fills generation m, the pointer of
:data:`~connectors.mongodb.store.GENERATIONS` holds ``mirror: m`` too: every
write then goes to ``c~m`` first, then to the live collection
(:mod:`connectors.mongodb.sink`); the switch sets ``gen: m`` in one update
(:class:`~connectors.base.Generations`). FerretDB's ``renameCollection``
lacks ``dropTarget``, so renaming the new collection over the old one cannot
be atomic; the pointer is.
"""

from __future__ import annotations

import logging
from typing import Any

import pymongo.errors as perr

from connectors.base import ViewTarget
from connectors.mongodb.store import (
    GENERATIONS,
    MongoStore,
    classify,
    generation_name,
)

logger = logging.getLogger(__name__)


#: the server's answer to a ``create`` of a collection that exists
NAMESPACE_EXISTS = 48


class MongoGenerations(MongoStore):
    """Creates, switches and drops the generations of a view's collection."""

    def _make_collection(self, name: str) -> None:
        """Make collection ``name`` unless it is there. Workers started
        together make a new view's collection at once: pymongo checks that
        it is not there, then the server answers the ``create`` of the
        slower one with NamespaceExists, as FerretDB did in most rounds of
        four at once (``test_sinks_opened_at_once_each_mark_the_view_loaded``)."""
        try:
            self.db.create_collection(name)
        except perr.CollectionInvalid:
            pass  # there already
        except perr.OperationFailure as exc:
            if exc.code != NAMESPACE_EXISTS:
                raise

    def _set_pointer(self, base: str, update: dict[str, Any]) -> None:
        """Apply ``update`` to the pointer of ``base``, made if missing. Of
        two processes upserting a new pointer at once, FerretDB fails the
        slower insert with a duplicate key (MongoDB retries such an upsert
        itself since 4.2); the pointer is there then, and a second try
        updates it."""
        pointers = self.db[GENERATIONS]
        try:
            pointers.update_one({"_id": base}, update, upsert=True)
        except perr.DuplicateKeyError:
            pointers.update_one({"_id": base}, update, upsert=True)

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        target = self._target(view)
        return target.renamed(generation_name(target.name, gen))

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        pointers, base = self.db[GENERATIONS], self._target(view).name
        try:
            pointers.update_one({"_id": base}, {"$unset": {"mirror": ""}})
            coll = self._generation_collection(view, gen)
            coll.drop()
            # a mirrored write that raced the drop may have made it again
            self._make_collection(coll.name)
            self._create_indexes(view, coll)
            self._set_pointer(base, {"$set": {"mirror": gen}})
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def switch_generation(self, view: str, gen: int) -> None:
        base = self._target(view).name
        try:
            # the rebuild loaded it whole: the mark moves with the switch
            uuid = self._uuid(generation_name(base, gen))
            self._set_pointer(
                base, {"$set": {"gen": gen, "loaded": uuid}, "$unset": {"mirror": ""}}
            )
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        logger.info("mongodb generation switched view=%s generation=%d", view, gen)

    def loaded(self, view: str) -> bool:
        """Whether the pointer's mark names the live collection: its id
        (``info.uuid``), which a collection dropped and made again (by the
        next write) does not keep."""
        base = self._target(view).name
        try:
            raw = self.db[GENERATIONS].find_one({"_id": base}) or {}
            mark = raw.get("loaded")
            live = generation_name(base, int(raw.get("gen", 1)))
            return mark is not None and mark == self._uuid(live, create=False)
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def mark_loaded(self, view: str) -> None:
        base = self._target(view).name
        try:
            raw = self.db[GENERATIONS].find_one({"_id": base}) or {}
            uuid = self._uuid(generation_name(base, int(raw.get("gen", 1))))
            self._set_pointer(base, {"$set": {"loaded": uuid}})
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def unmark(self, view: str) -> None:
        base = self._target(view).name
        try:
            self.db[GENERATIONS].update_one({"_id": base}, {"$unset": {"loaded": ""}})
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def _uuid(self, name: str, create: bool = True) -> Any:
        """The id of collection ``name`` (None: there is none), made first
        when ``create``."""
        if create:
            self._make_collection(name)
        for info in self.db.list_collections(filter={"name": name}):
            return info.get("info", {}).get("uuid")
        return None

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        try:
            self._generation_collection(view, gen).drop()
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def drop(self, view: str) -> None:
        """Drop the view's collection (rebuilds and tests; not in the protocol)."""
        try:
            self.collection(view).drop()
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
