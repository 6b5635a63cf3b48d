"""Redis sink: documents as JSON strings, guarded by one server-side Lua script.

The sink of the store :mod:`connectors.redis`: writes, generations, and the
filters its secondary indexes answer for sites
(:class:`~connectors.reads.Filterable`); what it waits for before
acknowledging is in :mod:`connectors.redis.wait`.

Key layout of a view whose target name (the key prefix) is ``p``:

* ``p:{id}`` — the document as a JSON string (what sites ``GET``);
  ``p:{{id}}`` when ``options["hash_tag"]`` is true, so a document's keys share
  one cluster slot.
* ``p#v:{id}`` — its version, :func:`~pipeline.events.version_key` form. A
  tombstone is a version key without a document key; it is kept forever
  unless ``options["tombstone_ttl_s"]`` (default ``0``: forever) says
  otherwise. Once an expiring tombstone is gone, any older write of the id
  applied later (a replay of the topic, ``dlq replay``, a worker lagging
  more than the TTL) brings the document back.
* ``p#ix:{id}`` — a hash of the document's current secondary-index values.
* ``p#idx:{field}:{value}`` — a set of ids (``"eq"`` index) and
  ``p#idx:{field}`` — a sorted set of ids scored by the value (``"range"``).

Auxiliary keys use ``#`` after the prefix rather than ``:`` so that no document
id can collide with them (``p:v:1`` could be a document).

Generations (rebuilds, :class:`~connectors.base.Generations`): generation 1
uses the prefix ``p``, generation n > 1 the prefix ``p~n``; ``p@gen`` holds
the live generation (absent: 1), and ``p@gen.mirror`` the generation a
rebuild is filling, if any: every write goes there first, then to the live
one. Every write checks both inside the script, and every read by id reads
``p@gen`` in the same ``MGET`` as the documents, so no call uses a generation
that a switch has left. Sites reading keys themselves should read ``p@gen``
first. Documents may expire
with ``options["ttl_s"]``; their version key expires with them, but secondary
index entries of an expired document stay until it is written or deleted again.

Every write goes through :data:`GUARD_SCRIPT`, registered once and called with
``EVALSHA`` for up to ``docs_per_call`` documents of one view per call. Because
it also maintains the secondary indexes, the index keys are derived inside the
script, which is fine on a standalone server; on Redis Cluster a batch spans
slots and must be split per slot first (not done here).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import redis
import redis.exceptions as rex
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.base import (
    Stored,
    StoreSink,
    ViewTarget,
    WriteResult,
    mirrored,
)
from connectors.reads import Condition, Eq, Found, Range
from connectors.redis import RedisSinkConfig
from connectors.redis.keys import (
    GUARD_SCRIPT,
    Layout,
    generation_prefix,
    glob_escape,
    index_value,
    is_number,
    parse_state,
    score_bounds,
    state_text,
    text_or_none,
    to_json,
)
from connectors.redis.wait import Durability
from pipeline.errors import BadRecord, FatalError, ReadsideError, TransientError
from pipeline.events import Delete, DocumentOp, Upsert, version_key

logger = logging.getLogger(__name__)

_FETCH_CHUNK = 1000


def classify(exc: Exception) -> ReadsideError:
    """Map a redis-py exception onto a readside error class, by type."""
    if isinstance(exc, ReadsideError):
        return exc
    if isinstance(exc, rex.AuthenticationError | rex.AuthorizationError):
        return FatalError(f"redis: not authorized: {exc}")
    if isinstance(exc, rex.NoPermissionError | rex.ExternalAuthProviderError):
        return FatalError(f"redis: not authorized: {exc}")
    if isinstance(
        exc,
        rex.ConnectionError  # includes BusyLoadingError
        | rex.TimeoutError
        | rex.ReadOnlyError  # a replica after failover
        | rex.OutOfMemoryError
        | rex.TryAgainError
        | rex.ClusterDownError,
    ):
        return TransientError(f"redis: {type(exc).__name__}: {exc}")
    return FatalError(f"redis: {type(exc).__name__}: {exc}")


class RedisSink(StoreSink[RedisSinkConfig]):
    """Keeps views as JSON strings in Redis, version-guarded by a Lua script.

    Args:
        name: the sink's name in the configuration.
        cfg: connection settings, ``docs_per_call`` and what to wait for
            before a batch is acknowledged (:mod:`connectors.redis.wait`).
        targets: view name -> where the view lives (the key prefix) and its
            options (``ttl_s``, ``tombstone_ttl_s``, ``indexes``, ``hash_tag``).
    """

    store = "redis"
    driver_errors = (rex.RedisError,)
    classify = staticmethod(classify)
    filter_first = True  # its indexes answer before a document store

    def __init__(
        self, name: str, cfg: RedisSinkConfig, targets: Mapping[str, ViewTarget]
    ) -> None:
        super().__init__(name, cfg, targets)
        self._live: dict[str, int] = {}  # view -> live generation, as last seen
        #: view -> the generation a rebuild fills (None: none), as last seen
        self._mirrors: dict[str, int | None] = {}
        # built now so that bad options fail at start
        self._layouts = {(v, 1): Layout(t) for v, t in self.targets.items()}
        self._client: redis.Redis | None = None
        self._sha: str | None = None
        self._durability = Durability(name, cfg)

    # -- connection -------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            self._client = redis.Redis.from_url(
                self.cfg.url.get_secret_value(),
                socket_timeout=self.cfg.timeout_s,
                socket_connect_timeout=self.cfg.timeout_s,
                decode_responses=True,
                # The worker retries with backoff; fail fast here.
                retry=Retry(NoBackoff(), 0),
                # WAIT and WAITAOF count the writes of their own connection.
                single_connection_client=self._durability.enabled,
            )
        return self._client

    def open(self) -> None:
        try:
            self._sha = str(self.client.script_load(GUARD_SCRIPT))
            self._durability.check(self.client)
            for view in self.targets:
                self._resolve(view)
        except rex.RedisError as exc:
            raise classify(exc) from exc
        logger.info("redis sink open sink=%s views=%d", self.name, len(self.targets))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _layout(self, view: str, gen: int | None = None) -> Layout:
        """The layout of generation ``gen`` (default: the live one as last seen)."""
        if gen is None:
            if view not in self._live:
                return self._resolve(view)
            gen = self._live[view]
        layout = self._layouts.get((view, gen))
        if layout is None:
            layout = self._layouts[(view, gen)] = Layout(self._target(view), gen)
        return layout

    def _resolve(self, view: str) -> Layout:
        """Read the live (and mirrored) generation of ``view``; the live layout."""
        base = Layout(self._target(view))
        raw, mirror = self.client.mget([base.generation_key, base.mirror_key])
        return self._seen(view, parse_state(text_or_none(raw), text_or_none(mirror)))

    def _seen(self, view: str, state: tuple[int, int | None]) -> Layout:
        self._live[view], self._mirrors[view] = state
        return self._layout(view, state[0])

    # -- generations --------------------------------------------------------

    def generation(self, view: str) -> int:
        try:
            return self._resolve(view).gen
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        target = self._target(view)
        return ViewTarget(view, generation_prefix(target.name, gen), target.options)

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        layout = self._layout(view, gen)
        try:
            # Writes that saw the mirror fail their check while it is emptied.
            self.client.delete(layout.mirror_key)
            self._drop_layout(layout)
            self.client.set(layout.mirror_key, str(gen))
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def switch_generation(self, view: str, gen: int) -> None:
        layout = self._layout(view, gen)
        try:
            with self.client.pipeline(transaction=True) as tx:  # MULTI ... EXEC
                tx.set(layout.generation_key, str(gen))
                tx.delete(layout.mirror_key)
                tx.execute()
        except rex.RedisError as exc:
            raise classify(exc) from exc
        self._live[view], self._mirrors[view] = gen, None
        logger.info("redis generation switched view=%s generation=%d", view, gen)

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        self._drop_layout(self._layout(view, gen))

    # -- writes -----------------------------------------------------------

    def write(self, ops: Sequence[DocumentOp]) -> WriteResult:
        """Apply ``ops`` (see :meth:`Sink.write`), then wait for the append-only
        file and replicas as configured before returning."""
        result = super().write(ops)
        if ops:
            try:
                self._durability.wait(self.client, wrote=result.applied > 0)
            except rex.RedisError as exc:
                raise classify(exc) from exc
        return result

    def _write_ready(self, ready: list[DocumentOp], result: WriteResult) -> WriteResult:
        by_view: dict[str, list[DocumentOp]] = {}
        for op in ready:
            by_view.setdefault(op.view, []).append(op)
        size = self.cfg.docs_per_call
        for view, view_ops in by_view.items():
            for start in range(0, len(view_ops), size):
                chunk = view_ops[start : start + size]
                result.merge(self._write_chunk(view, chunk))
        return result

    def _write_chunk(self, view: str, ops: list[DocumentOp]) -> WriteResult:
        """Write one script call's worth into the generation a rebuild fills
        (if any), then into the live one; again with the new generations if a
        rebuild began or switched meanwhile (the script then wrote nothing)."""
        for _ in range(5):
            live = self._layout(view)
            mirror = self._mirrors.get(view)
            state = state_text(live.gen, mirror)
            try:
                result = WriteResult()
                if mirror is not None:
                    result = self._write_keys(self._layout(view, mirror), ops, state)
                return mirrored(result, self._write_keys(live, ops, state))
            except rex.ResponseError as exc:
                text = str(exc)
                if not text.startswith("READSIDE_MOVED"):
                    raise
                self._seen(view, parse_state(text.split()[-1]))
        raise TransientError(f"redis: view {view} keeps switching generations")

    def _write_keys(
        self, layout: Layout, ops: list[DocumentOp], state: str
    ) -> WriteResult:
        result = WriteResult()
        fields = list(layout.indexes)
        keys: list[str] = []
        per_doc: list[str] = []
        sent: list[DocumentOp] = []
        for op in ops:
            try:
                args = self._doc_args(layout, fields, op)
            except BadRecord as exc:
                result.rejected.append((op, str(exc)))
                continue
            keys += [layout.doc_key(op.doc_id), layout.version_key(op.doc_id)]
            if fields:
                keys.append(layout.index_values_key(op.doc_id))
            per_doc += args
            sent.append(op)
        if not sent:
            return result
        head = [layout.generation_key, state]
        head += [str(len(sent)), str(layout.tomb_ttl), str(layout.doc_ttl)]
        head += [layout.index_base, str(len(fields))]
        for field in fields:
            head += [field, layout.indexes[field]]
        statuses = self._evalsha(keys, head + per_doc)
        for status in statuses:
            if int(status) == 1:
                result.applied += 1
            else:
                result.stale += 1
        return result

    @staticmethod
    def _doc_args(layout: Layout, fields: list[str], op: DocumentOp) -> list[str]:
        if isinstance(op, Delete):
            return ["d", version_key(op.version), "", op.doc_id] + [""] * len(fields)
        assert isinstance(op, Upsert)
        body = to_json(op.doc)  # raises on UNCHANGED too: it is not serializable
        values = [index_value(layout.indexes[f], op.doc.get(f)) for f in fields]
        return ["u", version_key(op.version), body, op.doc_id, *values]

    def _evalsha(self, keys: list[str], args: list[str]) -> list[Any]:
        if self._sha is None:
            self._sha = str(self.client.script_load(GUARD_SCRIPT))
        try:
            out = self.client.evalsha(self._sha, len(keys), *keys, *args)
        except rex.NoScriptError:
            # The server restarted or ran SCRIPT FLUSH: register it again.
            logger.info("redis script missing, reloading sink=%s", self.name)
            self._sha = str(self.client.script_load(GUARD_SCRIPT))
            out = self.client.evalsha(self._sha, len(keys), *keys, *args)
        return list(out)

    # -- reads ------------------------------------------------------------

    def indexes(self, view: str) -> dict[str, str]:
        """Secondary indexes of ``view``: field -> ``"eq"`` or ``"range"``."""
        return dict(self._layout(view, 1).indexes)

    def index_key(self, view: str, field: str, value: object = None) -> str:
        """The key of ``field``'s index: the set of ids holding ``value``
        (``eq``) or the sorted set of every id scored by the field (``range``).

        Raises:
            BadRecord: ``value`` cannot be held by an ``eq`` index.
        """
        try:
            layout = self._resolve(view)
        except rex.RedisError as exc:
            raise classify(exc) from exc
        if layout.indexes.get(field) == "eq":
            return layout.index_base + field + ":" + index_value("eq", value)[1:]
        return layout.index_base + field

    def covers(self, view: str, where: dict[str, Condition]) -> bool:
        """Whether the view's indexes answer every condition of ``where``
        (``eq`` for equality, ``range`` for bounds or a number)."""
        indexes = self.indexes(view)
        for name, cond in where.items():
            kind = indexes.get(name)
            if kind == "eq" and isinstance(cond, Eq):
                continue
            if kind == "range" and (isinstance(cond, Range) or is_number(cond.value)):
                continue
            return False
        return True

    def filter(self, view: str, where: dict[str, Condition], limit: int) -> Found:
        """Ids from the view's indexes (one pipelined round trip), then the
        documents (one ``MGET``)."""
        indexes = self.indexes(view)
        try:
            pipe = self.client.pipeline(transaction=False)
            eq_keys = [
                self.index_key(view, name, cond.value)
                for name, cond in where.items()
                if indexes[name] == "eq" and isinstance(cond, Eq)
            ]
            if eq_keys:
                pipe.sinter(eq_keys)
            for name, cond in where.items():
                if indexes[name] == "range":
                    low, high = score_bounds(cond)
                    pipe.zrangebyscore(self.index_key(view, name), low, high)
            results = pipe.execute()
        except rex.RedisError as exc:
            raise classify(exc) from exc
        ids: set[str] = set(results[0])
        for more in results[1:]:
            ids &= set(more)
        ordered = sorted(ids)
        stored = self.fetch(view, ordered[:limit])
        docs = {i: s.doc for i, s in stored.items() if s.doc is not None}
        return docs, len(ordered)

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        try:
            for start in range(0, len(ids), _FETCH_CHUNK):
                chunk = list(ids[start : start + _FETCH_CHUNK])
                self._fetch_chunk(view, chunk, out)
        except rex.RedisError as exc:
            raise classify(exc) from exc
        return out

    def _fetch_chunk(self, view: str, chunk: list[str], out: dict[str, Stored]) -> None:
        """One ``MGET`` (atomic) of the live generation and the documents; again
        if the generation was not the one the keys were built for."""
        for _ in range(5):
            layout = self._layout(view)
            keys = [layout.generation_key, layout.mirror_key]
            keys += [layout.version_key(i) for i in chunk]
            keys += [layout.doc_key(i) for i in chunk]
            live, mirror, *values = self.client.mget(keys)
            state = parse_state(text_or_none(live), text_or_none(mirror))
            if self._seen(view, state) is not layout:
                continue
            for n, doc_id in enumerate(chunk):
                ver, body = values[n], values[n + len(chunk)]
                if ver is None:
                    continue
                doc = None if body is None else json.loads(body)
                out[doc_id] = Stored(int(ver), doc)
            return
        raise TransientError(f"redis: view {view} keeps switching generations")

    def ids(self, view: str) -> set[str]:
        found: set[str] = set()
        try:
            layout = self._resolve(view)
            for chunk in self._scan_chunks(layout):
                candidates = [layout.id_of(k) for k in chunk]
                versions = self.client.mget([layout.version_key(i) for i in candidates])
                found.update(
                    i
                    for i, v in zip(candidates, versions, strict=True)
                    if v is not None
                )
        except rex.RedisError as exc:
            raise classify(exc) from exc
        return found

    def count(self, view: str) -> int:
        """Live documents of ``view``, counted by their keys (a ``SCAN``)."""
        try:
            layout = self._resolve(view)
            pattern = glob_escape(layout.prefix) + ":*"
            return sum(1 for _ in self.client.scan_iter(match=pattern, count=5000))
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def _scan_chunks(self, layout: Layout) -> Iterator[list[str]]:
        pattern = glob_escape(layout.prefix) + ":*"
        chunk: list[str] = []
        for key in self.client.scan_iter(match=pattern, count=1000):
            chunk.append(str(key))
            if len(chunk) >= _FETCH_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def drop(self, view: str) -> int:
        """Delete every key of the live generation of ``view`` and the key
        naming it (tests, and a store reloaded with ``readside snapshot
        --sink``; not in the protocol). The next write starts generation 1.

        Returns the number of keys deleted.
        """
        try:
            layout = self._resolve(view)
            deleted = self._drop_layout(layout)
            deleted += int(self.client.unlink(layout.generation_key))
            deleted += int(self.client.unlink(layout.mirror_key))
        except rex.RedisError as exc:
            raise classify(exc) from exc
        self._live.pop(view, None)
        return deleted

    def _drop_layout(self, layout: Layout) -> int:
        deleted = 0
        try:
            for suffix in (":*", "#*"):
                pattern = glob_escape(layout.prefix) + suffix
                batch: list[str] = []
                for key in self.client.scan_iter(match=pattern, count=1000):
                    batch.append(str(key))
                    if len(batch) >= _FETCH_CHUNK:
                        deleted += int(self.client.unlink(*batch))
                        batch = []
                if batch:
                    deleted += int(self.client.unlink(*batch))
        except rex.RedisError as exc:
            raise classify(exc) from exc
        return deleted
