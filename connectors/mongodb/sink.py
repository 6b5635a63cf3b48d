"""MongoDB sink: one collection per view, version-guarded replaces.

The sink of the store :mod:`connectors.mongodb`: writes, generations and the
filters of sites (:class:`~connectors.reads.Filterable`).

A document is stored as its body plus ``_id`` (the document id) and ``_v``
(its version, an int64). A delete replaces it with the tombstone
``{"_id": id, "_v": v, "_deleted": true}``; **queries of sites must filter
``{"_deleted": {"$ne": true}}``**.

A write first reads the stored versions of the batch (one ``find``/``$in``)
and skips what is already stale. Documents the store lacks are sent with an
unordered ``insert`` (a duplicate key means a concurrent writer came first:
the op is settled again). Documents held at an older version are replaced by
an ``update`` whose filter is the guard ``{_id: id, _v: {$lt: v}}``, so a
concurrent newer write is never overwritten; a statement that matched nothing
lost to a newer version and is counted stale. A command with write errors, or
fewer matches than statements, is settled op by op.

FerretDB v1 (PostgreSQL handler) is the MongoDB of the local stack and
tests. It differs in ways that shaped this module (measured with FerretDB
1.24.2; its SQLite handler, used before, was slower still):

* ``$in`` reads scan the collection (about 230 ms for 50 ids among 3,000
  documents); updates find their document by ``_id`` (about 2 ms each).
  Plain inserts are fast, so absent documents are inserted, never upserted.
* Its guarded update is not atomic: two writers of one document at once can
  leave the older version stored (152 of 200 concurrent pairs in a probe).
  MongoDB's is; the sink relies on MongoDB's rule and does not work around
  the stand-in here.
* An ``update`` command stops at its first write error even when unordered,
  and reports it at index 0; the statements after it are not run. Hence the
  op-by-op settling after any error.
* Its ``update`` reply then lacks ``nModified``, which makes pymongo's
  ``bulk_write`` fail with ``KeyError``; the sink sends the ``insert`` and
  ``update`` commands itself.
* An ``update`` command with as many statements as FerretDB's connection
  pool never returns, and the server is stuck from then on (see
  ``_MAX_UPDATES``); commands carry at most 10 updates.
* Arrays of arrays are refused (code 2, "nested arrays are not supported");
  such documents come back as rejected, so they reach the dead-letter topic.

Target options: ``indexes``, a list of field names or ``[field, direction]``
pairs, created in :meth:`MongoSink.open`.

Write concern: ``db.command`` does not apply the client's write concern, so
every ``insert`` and ``update`` command carries it as ``writeConcern``: the
URI's ``w``, ``journal`` and ``wtimeoutMS``, each overridden by the sink's
``write_concern`` setting. With neither, no ``writeConcern`` is sent and the
server's default applies. ``w=0`` is refused when the sink opens (the guard
reads the command's reply). A ``writeConcernError`` in a reply is transient:
the worker retries the batch and commits nothing. FerretDB accepts and
ignores ``writeConcern``.

Generations (rebuilds, :class:`~connectors.base.Generations`): generation 1
of a view whose target is ``c`` is the collection ``c``, generation n > 1 is
``c~n``; the document ``{_id: "c", gen: n}`` of the collection
``readside_generations`` names the live one (absent: 1), and while a rebuild
fills generation m, ``mirror: m`` too: every write then goes to ``c~m``
first, then to the live collection. Every write and read looks it up first
(one ``find`` by ``_id``, which FerretDB pushes down).
FerretDB's ``renameCollection`` lacks ``dropTarget``, so renaming the new
collection over the old one cannot be atomic; the pointer is.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import bson
import pymongo
import pymongo.errors as perr
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection
from pymongo.database import Database

from connectors.base import (
    Stored,
    StoreSink,
    ViewTarget,
    WriteResult,
    mirrored,
)
from connectors.mongodb import MongoSinkConfig
from connectors.reads import Condition, Eq, Found
from pipeline.errors import (
    BadRecord,
    ConfigError,
    FatalError,
    ReadsideError,
    TransientError,
)
from pipeline.events import Delete, DocumentOp, Upsert

logger = logging.getLogger(__name__)

RESERVED = ("_id", "_v", "_deleted")
DUPLICATE_KEY = 11000
_AUTH_CODES = {13, 18, 31, 33}  # Unauthorized, AuthenticationFailed, roles
_TRANSIENT_CODES = {6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435}
_MAX_DOC_BYTES = 16 * 1024 * 1024 - 16 * 1024
_MAX_CMD_BYTES = 8 * 1024 * 1024
#: FerretDB 1.24 holds a connection to its own database per statement of an
#: ``update`` command until the command ends, and needs one more to apply each
#: statement: a command of as many statements as its pool (50 by default; the
#: local stack sets 500) never returns, and the server answers nothing from
#: then on. Commands stay small, so that many writers at once stay below
#: the pool and each command finishes well inside the socket timeout (a
#: timed-out command keeps running in the server, and retries would pile up
#: behind it). Real MongoDB is not slowed down much by small commands.
_MAX_UPDATES = 10
_MAX_INSERTS = 500
_FETCH_CHUNK = 1000
_INT64_MAX = 2**63 - 1
#: the collection naming each view's live generation
GENERATIONS = "readside_generations"

_Doc = dict[str, Any]
_OPS = {"gt": "$gt", "gte": "$gte", "lt": "$lt", "lte": "$lte"}


def classify(exc: Exception) -> ReadsideError:
    """Map a pymongo exception onto a readside error class, by type and code."""
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, perr.ConnectionFailure):  # AutoReconnect, timeouts
        return TransientError(f"mongodb: {type(exc).__name__}: {exc}")
    if isinstance(exc, perr.WriteConcernError | perr.ExecutionTimeout):
        return TransientError(f"mongodb: {type(exc).__name__}: {exc}")
    if isinstance(exc, perr.OperationFailure):
        if exc.code in _AUTH_CODES:
            return FatalError(f"mongodb: not authorized: {exc}")
        if exc.code in _TRANSIENT_CODES or exc.has_error_label("RetryableWriteError"):
            return TransientError(f"mongodb: code {exc.code}: {exc}")
    return FatalError(f"mongodb: {type(exc).__name__}: {exc}")


def generation_name(base: str, gen: int) -> str:
    """The collection of generation ``gen`` of a view whose target is ``base``."""
    return base if gen == 1 else f"{base}~{gen}"


def _strip(raw: Mapping[str, Any]) -> Stored:
    version = int(raw["_v"])
    if raw.get("_deleted"):
        return Stored(version, None)
    return Stored(version, {k: v for k, v in raw.items() if k not in RESERVED})


class _Statement:
    """One document write, encoded once (``_id`` first)."""

    __slots__ = ("doc", "op", "size")

    def __init__(self, op: DocumentOp) -> None:
        if not 0 <= op.version <= _INT64_MAX:
            raise BadRecord("version", f"version {op.version} does not fit an int64")
        body: _Doc = {"_id": op.doc_id}
        if isinstance(op, Delete):
            body.update(_v=Int64(op.version), _deleted=True)
        else:
            assert isinstance(op, Upsert)
            for key in op.doc:
                if key in RESERVED or key.startswith("$"):
                    raise BadRecord("contract", f"field {key!r} is reserved in MongoDB")
            body.update(op.doc)
            body["_v"] = Int64(op.version)
        try:
            raw = bson.encode(body)
        except (bson.errors.InvalidDocument, OverflowError, TypeError) as exc:
            raise BadRecord(
                "encode", f"document cannot be stored as BSON: {exc}"
            ) from exc
        if len(raw) > _MAX_DOC_BYTES:
            raise BadRecord("size", f"document of {len(raw)} bytes is too large")
        self.op = op
        self.doc = RawBSONDocument(raw)
        self.size = len(raw) + 64

    def update(self) -> _Doc:
        query = {"_id": self.op.doc_id, "_v": {"$lt": Int64(self.op.version)}}
        return {"q": query, "u": self.doc, "upsert": False}


def _chunks(items: list[_Statement], count: int) -> list[list[_Statement]]:
    out: list[list[_Statement]] = []
    size = 0
    for st in items:
        if not out or len(out[-1]) >= count or size + st.size > _MAX_CMD_BYTES:
            out.append([])
            size = 0
        out[-1].append(st)
        size += st.size
    return out


class MongoSink(StoreSink[MongoSinkConfig]):
    """Keeps views as MongoDB documents, guarded by ``_v``.

    Args:
        name: the sink's name in the configuration.
        cfg: URI, database, timeout and write concern.
        targets: view name -> collection name and options (``indexes``).
    """

    store = "mongodb"
    driver_errors = (perr.PyMongoError,)
    classify = staticmethod(classify)
    filter_first = False  # answers any filter, after a covering index

    def __init__(
        self, name: str, cfg: MongoSinkConfig, targets: Mapping[str, ViewTarget]
    ) -> None:
        super().__init__(name, cfg, targets)
        self._client: pymongo.MongoClient[_Doc] | None = None

    @property
    def db(self) -> Database[_Doc]:
        if self._client is None:
            ms = int(self.cfg.timeout_s * 1000)
            self._client = pymongo.MongoClient(
                self.cfg.uri.get_secret_value(),
                serverSelectionTimeoutMS=ms,
                connectTimeoutMS=ms,
                socketTimeoutMS=ms,
                **self._write_concern_options(),
            )
        return self._client[self.cfg.database]

    def _write_concern_options(self) -> dict[str, Any]:
        """The sink's ``write_concern`` as client options (over the URI's)."""
        wc = self.cfg.write_concern
        if wc is None:
            return {}
        given = {"w": wc.w, "journal": wc.j, "wTimeoutMS": wc.wtimeout_ms}
        return {k: v for k, v in given.items() if v is not None}

    @property
    def write_concern(self) -> _Doc:
        """The ``writeConcern`` document every write command carries (empty:
        the server's default)."""
        return dict(self.db.client.write_concern.document)

    def collection(self, view: str) -> Collection[_Doc]:
        """The collection of the live generation of ``view``, read now."""
        return self._generation_collection(view, self.generation(view))

    def _generation_collection(self, view: str, gen: int) -> Collection[_Doc]:
        return self.db[generation_name(self._target(view).name, gen)]

    # -- lifecycle --------------------------------------------------------

    def open(self) -> None:
        if not self.db.client.write_concern.acknowledged:
            raise ConfigError(
                f"sinks.{self.name}: write concern w=0 is unacknowledged; the "
                "sink needs replies to guard its writes (use w=1 or more)"
            )
        try:
            self.db.command("ping")
            for view in self.targets:
                self._create_indexes(view, self.collection(view))
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        logger.info("mongodb sink open sink=%s views=%d", self.name, len(self.targets))

    def _create_indexes(self, view: str, coll: Collection[_Doc]) -> None:
        for spec in self._target(view).options.get("indexes") or ():
            if isinstance(spec, str):
                keys = [(spec, pymongo.ASCENDING)]
            else:
                keys = [(str(spec[0]), int(spec[1]))]
            coll.create_index(keys)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # -- generations --------------------------------------------------------

    def generation(self, view: str) -> int:
        return self._generations(view)[0]

    def _generations(self, view: str) -> tuple[int, int | None]:
        """The live generation of ``view`` and the one mirrored into, if any."""
        base = self._target(view).name
        try:
            raw = self.db[GENERATIONS].find_one({"_id": base}) or {}
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        mirror = raw.get("mirror")
        return int(raw.get("gen", 1)), None if mirror is None else int(mirror)

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        target = self._target(view)
        return ViewTarget(view, generation_name(target.name, gen), target.options)

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        pointers, base = self.db[GENERATIONS], self._target(view).name
        try:
            pointers.update_one({"_id": base}, {"$unset": {"mirror": ""}})
            coll = self._generation_collection(view, gen)
            coll.drop()
            try:
                self.db.create_collection(coll.name)
            except perr.CollectionInvalid:
                pass  # a mirrored write that raced the drop made it again
            self._create_indexes(view, coll)
            pointers.update_one({"_id": base}, {"$set": {"mirror": gen}}, upsert=True)
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    def switch_generation(self, view: str, gen: int) -> None:
        base = self._target(view).name
        try:
            self.db[GENERATIONS].update_one(
                {"_id": base},
                {"$set": {"gen": gen}, "$unset": {"mirror": ""}},
                upsert=True,
            )
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        logger.info("mongodb generation switched view=%s generation=%d", view, gen)

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        try:
            self._generation_collection(view, gen).drop()
        except perr.PyMongoError as exc:
            raise classify(exc) from exc

    # -- writes -----------------------------------------------------------

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        by_view: dict[str, list[DocumentOp]] = {}
        for op in ready:
            by_view.setdefault(op.view, []).append(op)
        for view, view_ops in by_view.items():
            result.merge(self._write_view(view, view_ops))
        return result

    def _write_view(self, view: str, ops: list[DocumentOp]) -> WriteResult:
        # The generations are read after the records were consumed: a write
        # that races a rebuild's start or switch is in what its catch-up
        # reads, or lands in a generation no reader reads any more.
        live, mirror = self._generations(view)
        if mirror is None:
            return self._write_generation(view, live, ops)
        into = self._write_generation(view, mirror, ops)
        if self._generations(view)[0] == mirror:
            return into  # switched meanwhile: the live generation holds them
        return mirrored(into, self._write_generation(view, live, ops))

    def _write_generation(
        self, view: str, gen: int, ops: list[DocumentOp]
    ) -> WriteResult:
        try:
            return self._write_coll(self._generation_collection(view, gen), ops)
        except perr.PyMongoError:
            if gen in self._generations(view):
                raise
            # A rebuild switched away from this generation and dropped it
            # meanwhile (FerretDB fails a write racing a drop): the live one
            # holds these writes, by the mirror or the rebuild's catch-up.
            logger.info(
                "mongodb write to a dropped generation skipped view=%s generation=%d",
                view,
                gen,
            )
            return WriteResult()

    def _write_coll(self, coll: Collection[_Doc], ops: list[DocumentOp]) -> WriteResult:
        result = WriteResult()
        stored = self._versions(coll, [op.doc_id for op in ops])
        inserts: list[_Statement] = []
        updates: list[_Statement] = []
        for op in ops:
            have = stored.get(op.doc_id)
            if have is not None and have >= op.version:
                result.stale += 1
                continue
            try:
                st = _Statement(op)
            except BadRecord as exc:
                result.rejected.append((op, str(exc)))
                continue
            (inserts if have is None else updates).append(st)
        unsettled: list[_Statement] = []
        for chunk in _chunks(inserts, _MAX_INSERTS):
            reply = self._command(coll, "insert", "documents", [st.doc for st in chunk])
            if reply.get("writeErrors"):
                unsettled += chunk
            else:
                result.applied += len(chunk)
        for chunk in _chunks(updates, _MAX_UPDATES):
            stmts = [st.update() for st in chunk]
            reply = self._command(coll, "update", "updates", stmts)
            if reply.get("writeErrors") or int(reply.get("n", 0)) != len(chunk):
                unsettled += chunk
            else:
                result.applied += len(chunk)
        if unsettled:
            result.merge(self._settle(coll, unsettled))
        return result

    def _command(
        self, coll: Collection[_Doc], verb: str, field: str, items: list[Any]
    ) -> _Doc:
        command: _Doc = {verb: coll.name, field: items, "ordered": False}
        concern = self.write_concern
        if concern:
            command["writeConcern"] = concern
        reply = self.db.command(command)
        if reply.get("writeConcernError"):
            raise TransientError(
                f"mongodb: write concern: {reply['writeConcernError']}"
            )
        return reply

    def _settle(self, coll: Collection[_Doc], chunk: list[_Statement]) -> WriteResult:
        """Find out what a failed command applied; run the rest one by one."""
        result = WriteResult()
        stored = self._versions(coll, [st.op.doc_id for st in chunk])
        for st in chunk:
            have = stored.get(st.op.doc_id)
            if have is not None and have >= st.op.version:
                if have == st.op.version:
                    result.applied += 1  # by the failed command (equal content)
                else:
                    result.stale += 1
                continue
            if have is None:
                reply = self._command(coll, "insert", "documents", [st.doc])
            else:
                reply = self._command(coll, "update", "updates", [st.update()])
            errors = reply.get("writeErrors") or []
            if errors and errors[0].get("code") == DUPLICATE_KEY:
                raise TransientError(f"mongodb: concurrent insert of {st.op.doc_id!r}")
            if errors:
                err = errors[0]
                reason = f"code {err.get('code')}: {err.get('errmsg')}"
                result.rejected.append((st.op, reason))
            elif int(reply.get("n", 0)) == 1:
                result.applied += 1
            else:
                result.stale += 1  # a newer version won meanwhile
        return result

    def _versions(self, coll: Collection[_Doc], ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), _FETCH_CHUNK):
            chunk = list(ids[start : start + _FETCH_CHUNK])
            for raw in coll.find({"_id": {"$in": chunk}}, {"_v": 1}):
                out[str(raw["_id"])] = int(raw["_v"])
        return out

    # -- reads ------------------------------------------------------------

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        try:
            coll = self.collection(view)
            for start in range(0, len(ids), _FETCH_CHUNK):
                chunk = list(ids[start : start + _FETCH_CHUNK])
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

    def drop(self, view: str) -> None:
        """Drop the view's collection (rebuilds and tests; not in the protocol)."""
        try:
            self.collection(view).drop()
        except perr.PyMongoError as exc:
            raise classify(exc) from exc


def mongo_query(where: dict[str, Condition]) -> _Doc:
    """The MongoDB filter of validated conditions, tombstones excluded."""
    query: _Doc = {}
    for name, cond in where.items():
        if isinstance(cond, Eq):
            query[name] = cond.value
        else:
            query[name] = {_OPS[op]: value for op, value in cond.bounds}
    query["_deleted"] = {"$ne": True}
    return query
