"""MongoDB sink: one collection per view, version-guarded replaces.

The sink of the store :mod:`connectors.mongodb`: writes, generations and the
filters of sites (:class:`~connectors.reads.Filterable`). This module holds
the writes; the client, the collections and the generation pointer are in
:mod:`connectors.mongodb.store`, the generations in
:mod:`connectors.mongodb.generations`, the reads in
:mod:`connectors.mongodb.reads`.

A document is stored as its body plus ``_id`` (the document id) and ``_v``
(its version, an int64). A delete replaces it with the tombstone
``{"_id": id, "_v": v, "_deleted": true}``; **queries of sites must filter
``{"_deleted": {"$ne": true}}``**.

On MongoDB a write first reads the stored versions of the batch (one
``find``/``$in`` on the ``_id`` index) and skips what is already stale.
Documents the store lacks are sent with an unordered ``insert``. A document
the insert finds stored (a duplicate key: it was there, or a concurrent
writer came first) joins the updates. Documents held at an older version are
replaced by an ``update`` whose filter is the guard ``{_id: id, _v: {$lt:
v}}``, so a concurrent newer write is never overwritten; a statement that
matched nothing lost to a newer version and is counted stale. A command with
other write errors, or fewer matches than statements, is settled op by op.

On FerretDB the sink reads first only into a collection where most of the
batch before was stored already (a stream of updates). Otherwise (a load,
a stream of inserts) every document is tried as an insert first, and only
when some were stored already are their versions read (one ``find``/``$in``),
the stale ones skipped and the rest updated with the guard. FerretDB's
``$in`` read scans the collection (below): read first, it cost more than the
inserts of a batch of new documents as soon as the collection held a few
thousand, while a failed insert finds its document by ``_id``; for a batch of
stored documents the failed inserts would come on top of the read. On
MongoDB the read first is the cheaper for documents that are there (a failed
insert is a write that MongoDB rolls back), and a change stream's documents
mostly are.

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
  pool never returns, and the server is stuck from then on; its commands
  carry at most 10 updates
  (:data:`~connectors.mongodb.store.MAX_UPDATES_FERRETDB`).
  The sink tells FerretDB from MongoDB when it opens (``buildInfo`` has
  ``ferretdbVersion``); MongoDB's commands carry up to 500 updates, as
  its inserts do, so that a batch of updates is one round trip there, not
  fifty.
* Arrays of arrays are refused (code 2, "nested arrays are not supported");
  such documents come back as rejected, so they reach the dead-letter topic.

Write concern: ``db.command`` does not apply the client's write concern, so
every ``insert`` and ``update`` command carries it as ``writeConcern``: the
URI's ``w``, ``journal`` and ``wtimeoutMS``, each overridden by the sink's
``write_concern`` setting. With neither, no ``writeConcern`` is sent and the
server's default applies. ``w=0`` is refused when the sink opens (the guard
reads the command's reply). A ``writeConcernError`` in a reply is transient:
the worker retries the batch and commits nothing. FerretDB accepts and
ignores ``writeConcern``.

Generations (rebuilds): while a rebuild fills generation m
(:mod:`connectors.mongodb.generations`), every write goes to ``c~m`` first,
then to the live collection.

Numerics: with the view's option ``numeric: decimal128`` every numeric field
of the view's shape is written as ``Decimal128`` (and read back as its text):
:mod:`connectors.mongodb.decimals`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import bson
import pymongo.errors as perr
from bson.int64 import Int64
from bson.raw_bson import RawBSONDocument
from pymongo.collection import Collection

from connectors.base import WriteResult, mirrored
from connectors.mongodb.decimals import Path, to_decimal128
from connectors.mongodb.generations import MongoGenerations
from connectors.mongodb.reads import MongoReads
from connectors.mongodb.store import FETCH_CHUNK, MAX_STATEMENTS, RESERVED, Doc
from pipeline.errors import BadRecord, TransientError
from pipeline.events import Delete, DocumentOp, Upsert

logger = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
_MAX_DOC_BYTES = 16 * 1024 * 1024 - 16 * 1024
_MAX_CMD_BYTES = 8 * 1024 * 1024
_INT64_MAX = 2**63 - 1


class _Statement:
    """One document write, encoded once (``_id`` first)."""

    __slots__ = ("doc", "op", "size")

    def __init__(self, op: DocumentOp, numerics: Sequence[Path] = ()) -> None:
        if not 0 <= op.version <= _INT64_MAX:
            raise BadRecord("version", f"version {op.version} does not fit an int64")
        body: Doc = {"_id": op.doc_id}
        if isinstance(op, Delete):
            body.update(_v=Int64(op.version), _deleted=True)
        else:
            assert isinstance(op, Upsert)
            for key in op.doc:
                if key in RESERVED or key.startswith("$"):
                    raise BadRecord("contract", f"field {key!r} is reserved in MongoDB")
            body.update(to_decimal128(op.doc, numerics) if numerics else op.doc)
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

    def update(self) -> Doc:
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


class MongoSink(MongoGenerations, MongoReads):
    """Keeps views as MongoDB documents, guarded by ``_v``.

    Its constructor is :class:`~connectors.mongodb.store.MongoStore`'s.
    """

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
        numerics = self.numeric_paths(view) if self.decimal128(view) else []
        try:
            coll = self._generation_collection(view, gen)
            return self._write_coll(coll, ops, numerics)
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

    def _write_coll(
        self,
        coll: Collection[Doc],
        ops: list[DocumentOp],
        numerics: Sequence[Path] = (),
    ) -> WriteResult:
        result = WriteResult()
        stored: dict[str, int] = {}
        read_first = self.read_first or self._mostly_stored.get(coll.full_name, False)
        if read_first:
            stored = self._versions(coll, [op.doc_id for op in ops])
        inserts: list[_Statement] = []
        updates: list[_Statement] = []
        for op in ops:
            have = stored.get(op.doc_id)
            if have is not None and have >= op.version:
                result.stale += 1
                continue
            try:
                st = _Statement(op, numerics)
            except BadRecord as exc:
                result.rejected.append((op, str(exc)))
                continue
            (inserts if have is None else updates).append(st)
        unsettled: list[_Statement] = []
        stored_already: list[_Statement] = []
        for chunk in _chunks(inserts, MAX_STATEMENTS):
            reply = self._command(coll, "insert", "documents", [st.doc for st in chunk])
            errors = reply.get("writeErrors") or []
            if not errors:
                result.applied += len(chunk)
                continue
            failed = {int(e.get("index", -1)): e.get("code") for e in errors}
            if int(reply.get("n", 0)) + len(failed) != len(chunk):
                unsettled += chunk  # the server stopped early: ask what it did
                continue
            for i, st in enumerate(chunk):
                if i not in failed:
                    result.applied += 1
                elif failed[i] == DUPLICATE_KEY:
                    stored_already.append(st)
                else:
                    unsettled.append(st)
        found = len(stored) if read_first else len(stored_already)
        self._mostly_stored[coll.full_name] = 2 * found > len(ops)
        if stored_already:
            # their versions (one read, only when some were stored): the
            # stale ones need no update
            held = self._versions(coll, [st.op.doc_id for st in stored_already])
            for st in stored_already:
                have = held.get(st.op.doc_id)
                if have is None:
                    unsettled.append(st)
                elif have >= st.op.version:
                    result.stale += 1
                else:
                    updates.append(st)
        for chunk in _chunks(updates, self.max_updates):
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
        self, coll: Collection[Doc], verb: str, field: str, items: list[Any]
    ) -> Doc:
        command: Doc = {verb: coll.name, field: items, "ordered": False}
        concern = self.write_concern
        if concern:
            command["writeConcern"] = concern
        reply = self.db.command(command)
        if reply.get("writeConcernError"):
            raise TransientError(
                f"mongodb: write concern: {reply['writeConcernError']}"
            )
        return reply

    def _settle(self, coll: Collection[Doc], chunk: list[_Statement]) -> WriteResult:
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

    def _versions(self, coll: Collection[Doc], ids: Sequence[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = list(ids[start : start + FETCH_CHUNK])
            for raw in coll.find({"_id": {"$in": chunk}}, {"_v": 1}):
                out[str(raw["_id"])] = int(raw["_v"])
        return out
