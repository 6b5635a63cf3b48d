"""The MongoDB store's ground the sink's parts share: its client, names, pointer.

A document is stored as its body plus ``_id`` (the document id) and ``_v``
(its version, an int64); a tombstone is ``{"_id": id, "_v": v, "_deleted":
true}`` (:data:`RESERVED` are these fields). Generation 1 of a view whose
target is ``c`` is the collection ``c``, generation n > 1 is ``c~n``
(:func:`generation_name`); the document ``{_id: "c", gen: n}`` of the
collection :data:`GENERATIONS` names the live one (absent: 1), and ``mirror:
m`` the one a rebuild fills (:mod:`connectors.mongodb.generations`). Every
write and read looks it up first (one ``find`` by ``_id``, which FerretDB
pushes down).

Target options: ``indexes``, a list of field names or ``[field, direction]``
pairs, created in :meth:`MongoStore.open`; ``numeric``: ``string`` (the
default, readside's exact text) or ``decimal128``
(:mod:`connectors.mongodb.decimals`).

Here: :func:`classify` (pymongo's exceptions onto readside's errors; a
server certificate the URI does not trust, which pymongo reports as a server
that does not answer, is told apart at the sink's start by
:mod:`connectors.mongodb.trust`) and
:class:`MongoStore`, the client with its write concern, the collections of a
view's generations and the indexes, which the writes
(:mod:`connectors.mongodb.sink`), the generations and the reads
(:mod:`connectors.mongodb.reads`) build on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pymongo
import pymongo.errors as perr
from pymongo.collection import Collection
from pymongo.database import Database

from connectors.base import StoreSink, ViewTarget
from connectors.mongodb import MongoSinkConfig, decimals, trust
from pipeline.errors import ConfigError, FatalError, ReadsideError, TransientError
from pipeline.fieldtypes import numeric_paths

logger = logging.getLogger(__name__)

#: FerretDB 1.24 holds a connection to its own database per statement of an
#: ``update`` command until the command ends, and needs one more to apply each
#: statement: a command of as many statements as its pool (50 by default; the
#: local stack sets 500) never returns, and the server answers nothing from
#: then on. Its commands stay small, so that many writers at once stay below
#: the pool and each command finishes well inside the socket timeout (a
#: timed-out command keeps running in the server, and retries would pile up
#: behind it). Until the sink has opened and asked, every server is taken
#: for FerretDB.
MAX_UPDATES_FERRETDB = 10
#: the statements of one command on MongoDB, updates and inserts alike (and
#: at most 8 MB of them, the sink's `_MAX_CMD_BYTES`)
MAX_STATEMENTS = 500
RESERVED = ("_id", "_v", "_deleted")
#: what each of :data:`RESERVED` holds (:func:`connectors.base.refuse_reserved`)
RESERVED_FOR = {
    "_id": "the document id",
    "_v": "the document's version",
    "_deleted": "its tombstones",
}
_AUTH_CODES = {13, 18, 31, 33}  # Unauthorized, AuthenticationFailed, roles
_TRANSIENT_CODES = {6, 7, 50, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435}
FETCH_CHUNK = 1000
#: the collection naming each view's live generation
GENERATIONS = "readside_generations"

Doc = dict[str, Any]


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


#: the longest wait to find or connect to the server (``timeout_s`` if lower)
REACH_S = 5.0


class MongoStore(StoreSink[MongoSinkConfig]):
    """The client, the collections and the generation pointer of a MongoDB
    sink.

    Args:
        name: the sink's name in the configuration.
        cfg: URI, database, timeout and write concern.
        targets: view name -> collection name and options (``indexes``).
    """

    store = "mongodb"
    reserved = RESERVED_FOR
    driver_errors = (perr.PyMongoError,)
    classify = staticmethod(classify)

    def __init__(
        self, name: str, cfg: MongoSinkConfig, targets: Mapping[str, ViewTarget]
    ) -> None:
        super().__init__(name, cfg, targets)
        self._client: pymongo.MongoClient[Doc] | None = None
        self._numeric_paths: dict[str, list[tuple[str, ...]]] = {}
        #: the most updates one ``update`` command carries: FerretDB's limit
        #: until :meth:`open` finds MongoDB
        self.max_updates = MAX_UPDATES_FERRETDB
        #: whether every write reads the stored versions of its batch first
        #: (MongoDB, :meth:`open` finds out); else (FerretDB) only a write
        #: into a collection where most of the batch before was stored
        #: already, and the others try every document as an insert first
        #: (:mod:`connectors.mongodb.sink`)
        self.read_first = False
        #: per collection, whether most documents of its last batch were
        #: stored already
        self._mostly_stored: dict[str, bool] = {}

    @property
    def db(self) -> Database[Doc]:
        if self._client is None:
            ms = int(self.cfg.timeout_s * 1000)
            # A server that is down is a transient error within seconds (the
            # worker backs off, commits nothing, and says so), not after two
            # full timeouts; a slow bulk write keeps the whole socket timeout.
            reach_ms = min(ms, int(REACH_S * 1000))
            self._client = pymongo.MongoClient(
                self.cfg.uri.get_secret_value(),
                serverSelectionTimeoutMS=reach_ms,
                connectTimeoutMS=reach_ms,
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
    def write_concern(self) -> Doc:
        """The ``writeConcern`` document every write command carries (empty:
        the server's default)."""
        return dict(self.db.client.write_concern.document)

    def collection(self, view: str) -> Collection[Doc]:
        """The collection of the live generation of ``view``, read now."""
        return self._generation_collection(view, self.generation(view))

    def _generation_collection(self, view: str, gen: int) -> Collection[Doc]:
        return self.db[generation_name(self._target(view).name, gen)]

    # -- lifecycle --------------------------------------------------------

    def open(self) -> None:
        if not self.db.client.write_concern.acknowledged:
            raise ConfigError(
                f"sinks.{self.name}: write concern w=0 is unacknowledged; the "
                "sink needs replies to guard its writes (use w=1 or more)"
            )
        self.check_reserved()
        try:
            self.db.command("ping")
            ferretdb = "ferretdbVersion" in self.db.command("buildInfo")
            self.max_updates = MAX_UPDATES_FERRETDB if ferretdb else MAX_STATEMENTS
            self.read_first = not ferretdb
            for view in self.targets:
                self._create_indexes(view, self.collection(view))
            if any(self.decimal128(view) for view in self.targets):
                decimals.check_server(self.db, self.name)
        except perr.ServerSelectionTimeoutError as exc:
            raise self._unreachable(exc) from exc
        except perr.PyMongoError as exc:
            raise classify(exc) from exc
        logger.info("mongodb sink open sink=%s views=%d", self.name, len(self.targets))

    def _unreachable(self, exc: perr.ServerSelectionTimeoutError) -> ReadsideError:
        """What no server answering the sink's start means: a certificate its
        URI does not trust (:mod:`connectors.mongodb.trust`) is fatal, a
        server that is down transient."""
        where = trust.untrusted(self.cfg.uri.get_secret_value(), self.cfg.timeout_s)
        if where is None:
            return classify(exc)
        return FatalError(
            "mongodb: the server's TLS certificate is not trusted (the URI's "
            f"tlsCAFile and tls options): {where}"
        )

    def _create_indexes(self, view: str, coll: Collection[Doc]) -> None:
        for spec in self._target(view).options.get("indexes") or ():
            if isinstance(spec, str):
                keys = [(spec, pymongo.ASCENDING)]
            else:
                keys = [(str(spec[0]), int(spec[1]))]
            coll.create_index(keys)

    def decimal128(self, view: str) -> bool:
        """Whether ``view`` stores its numerics as ``Decimal128`` (the target
        option ``numeric: decimal128``, :mod:`connectors.mongodb.decimals`)."""
        mode = self._target(view).options.get("numeric", "string")
        if mode not in decimals.MODES:
            raise ConfigError(
                f"sinks.{self.name}: view {view}: numeric must be one of "
                f"{', '.join(decimals.MODES)} (got {mode!r})"
            )
        return bool(mode == "decimal128")

    def numeric_paths(self, view: str) -> list[tuple[str, ...]]:
        """The paths of the numeric fields of ``view`` (its shape, read once)."""
        if view not in self._numeric_paths:
            self._numeric_paths[view] = numeric_paths(self._target(view).fields())
        return self._numeric_paths[view]

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
