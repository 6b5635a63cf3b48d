"""Redis sink: documents as JSON strings, guarded by one server-side Lua script.

The whole store is here: its settings (:class:`RedisSinkConfig`), its sink
with generations, the filters its secondary indexes answer for sites
(:class:`~connectors.reads.Filterable`) and :data:`KIND`, the sink type
``redis`` (what to wait for before acknowledging is in
:mod:`connectors.redis_wait`).

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
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import redis
import redis.exceptions as rex
from pydantic import Field, SecretStr
from redis.backoff import NoBackoff
from redis.retry import Retry

from connectors.base import (
    SinkKind,
    Stored,
    StoreSink,
    ViewTarget,
    WriteResult,
    mirrored,
)
from connectors.reads import Condition, Eq, Found, Range, Scalar
from connectors.redis_wait import Durability
from pipeline.errors import BadRecord, FatalError, ReadsideError, TransientError
from pipeline.events import Delete, DocumentOp, Upsert, version_key
from pipeline.sinktypes import SinkConfig

logger = logging.getLogger(__name__)


class RedisSinkConfig(SinkConfig):
    """A Redis server. By default a batch is acknowledged once Redis applied it
    in memory; ``wait_aof`` and ``wait_replicas`` make the sink wait, after
    each batch and before the worker may commit, for the append-only file
    fsync (``WAITAOF``, Redis >= 7.2; or the server's ``appendfsync always``)
    and for that many replicas."""

    type: Literal["redis"]
    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    timeout_s: float = Field(5.0, gt=0)
    docs_per_call: int = Field(200, ge=1)
    wait_aof: bool = False
    wait_replicas: int = Field(0, ge=0)
    wait_timeout_ms: int = Field(1000, ge=1)

    def targets_overlap(self, a: str, b: str) -> bool:
        """A view is found by scanning ``prefix:*`` and ``prefix#*``: a prefix
        followed by ``:`` or ``#`` starts another view's key space."""
        pairs = ((a, b), (b, a))
        return a == b or any(x.startswith(y + s) for x, y in pairs for s in ":#")


#: Tombstones are kept forever by default: expiring one lets a later replay
#: of an older write resurrect the document.
DEFAULT_TOMBSTONE_TTL_S = 0
_FETCH_CHUNK = 1000

#: KEYS, per document: doc key, version key[, index-values key].
#: ARGV: generation key, the generations the caller saw (``live`` or
#: ``live>mirror``, see :func:`_state_text`), n, tombstone ttl,
#: doc ttl, index key base, m, m x (field, kind), then per document: op
#: ("u"/"d"), version, body, id, m index values ("" = no value, else "="
#: followed by the value).
#: Returns one status per document: 1 applied, 0 stale; or the error
#: ``READSIDE_MOVED <generations>`` and writes nothing when the view's
#: generations are no longer the ones the caller saw (a rebuild began
#: mirroring or switched): the caller builds the keys again and retries.
GUARD_SCRIPT = """
local live = redis.call('GET', ARGV[1]) or '1'
local mirror = redis.call('GET', ARGV[1] .. '.mirror')
if mirror then live = live .. '>' .. mirror end
if live ~= ARGV[2] then
  return redis.error_reply('READSIDE_MOVED ' .. live)
end
local n = tonumber(ARGV[3])
local tomb_ttl = tonumber(ARGV[4])
local doc_ttl = tonumber(ARGV[5])
local base = ARGV[6]
local m = tonumber(ARGV[7])
local fields, kinds = {}, {}
local a = 8
for j = 1, m do
  fields[j] = ARGV[a]
  kinds[j] = ARGV[a + 1]
  a = a + 2
end
local step = 2
if m > 0 then step = 3 end
local out = {}
for i = 1, n do
  local k = (i - 1) * step
  local dkey, vkey = KEYS[k + 1], KEYS[k + 2]
  local op, ver, body, id = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  a = a + 4
  local have = redis.call('GET', vkey)
  if have and have >= ver then
    out[i] = 0
  else
    if op == 'u' then
      if doc_ttl > 0 then
        redis.call('SET', dkey, body, 'EX', doc_ttl)
        redis.call('SET', vkey, ver, 'EX', doc_ttl)
      else
        redis.call('SET', dkey, body)
        redis.call('SET', vkey, ver)
      end
    else
      redis.call('DEL', dkey)
      if tomb_ttl > 0 then
        redis.call('SET', vkey, ver, 'EX', tomb_ttl)
      else
        redis.call('SET', vkey, ver)
      end
    end
    if m > 0 then
      local ikey = KEYS[k + 3]
      for j = 1, m do
        local new = ARGV[a + j - 1]
        if op ~= 'u' then new = '' end
        local old = redis.call('HGET', ikey, fields[j])
        if not old then old = '' end
        if old ~= new then
          if old ~= '' then
            if kinds[j] == 'eq' then
              redis.call('SREM', base .. fields[j] .. ':' .. string.sub(old, 2), id)
            else
              redis.call('ZREM', base .. fields[j], id)
            end
          end
          if new ~= '' then
            if kinds[j] == 'eq' then
              redis.call('SADD', base .. fields[j] .. ':' .. string.sub(new, 2), id)
            else
              redis.call('ZADD', base .. fields[j], string.sub(new, 2), id)
            end
            redis.call('HSET', ikey, fields[j], new)
          else
            redis.call('HDEL', ikey, fields[j])
          end
        end
      end
    end
    out[i] = 1
  end
  a = a + m
end
return out
"""


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


def generation_prefix(base: str, gen: int) -> str:
    """The key prefix of generation ``gen`` of a view whose target is ``base``."""
    return base if gen == 1 else f"{base}~{gen}"


class _Layout:
    """Key names and write options of one generation of one view's target."""

    def __init__(self, target: ViewTarget, gen: int = 1) -> None:
        opts = target.options
        self.gen = gen
        self.prefix = generation_prefix(target.name, gen)
        #: holds the live generation; outside the ``p:*`` / ``p#*`` key space
        #: of every generation, so dropping one never touches it
        self.generation_key = f"{target.name}@gen"
        #: holds the generation a rebuild is filling (absent: none)
        self.mirror_key = f"{self.generation_key}.mirror"
        self.hash_tag = bool(opts.get("hash_tag", False))
        self.doc_ttl = int(opts.get("ttl_s", 0) or 0)
        self.tomb_ttl = int(opts.get("tombstone_ttl_s", DEFAULT_TOMBSTONE_TTL_S))
        indexes: Mapping[str, str] = opts.get("indexes") or {}
        for field, kind in indexes.items():
            if kind not in ("eq", "range"):
                raise FatalError(
                    f"redis: view {target.view}: index {field!r} has kind {kind!r}, "
                    "expected 'eq' or 'range'"
                )
        self.indexes = dict(indexes)

    def _id(self, doc_id: str) -> str:
        return f"{{{doc_id}}}" if self.hash_tag else doc_id

    def doc_key(self, doc_id: str) -> str:
        return f"{self.prefix}:{self._id(doc_id)}"

    def version_key(self, doc_id: str) -> str:
        return f"{self.prefix}#v:{self._id(doc_id)}"

    def index_values_key(self, doc_id: str) -> str:
        return f"{self.prefix}#ix:{self._id(doc_id)}"

    @property
    def index_base(self) -> str:
        return f"{self.prefix}#idx:"

    def id_of(self, doc_key: str) -> str:
        raw = doc_key[len(self.prefix) + 1 :]
        if self.hash_tag and raw.startswith("{") and raw.endswith("}"):
            return raw[1:-1]
        return raw


def _state_text(live: int, mirror: int | None) -> str:
    """What the guard script compares: ``live`` or ``live>mirror``."""
    return str(live) if mirror is None else f"{live}>{mirror}"


def _parse_state(text: str | None, mirror: str | None = None) -> tuple[int, int | None]:
    """(live, mirror) from ``p@gen`` (and ``p@gen.mirror``) or a script's
    ``READSIDE_MOVED`` text."""
    if text and ">" in text:
        live, _, mirror = text.partition(">")
        return int(live), int(mirror)
    return (int(text) if text else 1), (int(mirror) if mirror else None)


def _index_value(kind: str, value: Any) -> str:
    """The script's form of one index value; raises BadRecord if unusable."""
    if value is None:
        return ""
    if kind == "range":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise BadRecord("index", f"range index value {value!r} is not a number")
        try:
            number = float(value)
        except ValueError:
            raise BadRecord(
                "index", f"range index value {value!r} is not a number"
            ) from None
        if math.isnan(number):
            raise BadRecord("index", "range index value is NaN")
        return "=" + repr(number)
    if isinstance(value, bool):
        return "=" + ("true" if value else "false")
    if isinstance(value, str | int | float):
        return "=" + str(value)
    raise BadRecord("index", f"eq index value {value!r} is not a scalar")


def _json(doc: Mapping[str, Any]) -> str:
    try:
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise BadRecord("encode", f"document is not JSON serializable: {exc}") from exc


class RedisSink(StoreSink[RedisSinkConfig]):
    """Keeps views as JSON strings in Redis, version-guarded by a Lua script.

    Args:
        name: the sink's name in the configuration.
        cfg: connection settings, ``docs_per_call`` and what to wait for
            before a batch is acknowledged (:mod:`connectors.redis_wait`).
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
        self._layouts = {(v, 1): _Layout(t) for v, t in self.targets.items()}
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

    def _layout(self, view: str, gen: int | None = None) -> _Layout:
        """The layout of generation ``gen`` (default: the live one as last seen)."""
        if gen is None:
            if view not in self._live:
                return self._resolve(view)
            gen = self._live[view]
        layout = self._layouts.get((view, gen))
        if layout is None:
            layout = self._layouts[(view, gen)] = _Layout(self._target(view), gen)
        return layout

    def _resolve(self, view: str) -> _Layout:
        """Read the live (and mirrored) generation of ``view``; the live layout."""
        base = _Layout(self._target(view))
        raw, mirror = self.client.mget([base.generation_key, base.mirror_key])
        return self._seen(view, _parse_state(_str(raw), _str(mirror)))

    def _seen(self, view: str, state: tuple[int, int | None]) -> _Layout:
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
            state = _state_text(live.gen, mirror)
            try:
                result = WriteResult()
                if mirror is not None:
                    result = self._write_keys(self._layout(view, mirror), ops, state)
                return mirrored(result, self._write_keys(live, ops, state))
            except rex.ResponseError as exc:
                text = str(exc)
                if not text.startswith("READSIDE_MOVED"):
                    raise
                self._seen(view, _parse_state(text.split()[-1]))
        raise TransientError(f"redis: view {view} keeps switching generations")

    def _write_keys(
        self, layout: _Layout, ops: list[DocumentOp], state: str
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
    def _doc_args(layout: _Layout, fields: list[str], op: DocumentOp) -> list[str]:
        if isinstance(op, Delete):
            return ["d", version_key(op.version), "", op.doc_id] + [""] * len(fields)
        assert isinstance(op, Upsert)
        body = _json(op.doc)  # raises on UNCHANGED too: it is not serializable
        values = [_index_value(layout.indexes[f], op.doc.get(f)) for f in fields]
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
            return layout.index_base + field + ":" + _index_value("eq", value)[1:]
        return layout.index_base + field

    def covers(self, view: str, where: dict[str, Condition]) -> bool:
        """Whether the view's indexes answer every condition of ``where``
        (``eq`` for equality, ``range`` for bounds or a number)."""
        indexes = self.indexes(view)
        for name, cond in where.items():
            kind = indexes.get(name)
            if kind == "eq" and isinstance(cond, Eq):
                continue
            if kind == "range" and (isinstance(cond, Range) or _numeric(cond.value)):
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
                    low, high = _score_bounds(cond)
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
            state = _parse_state(_str(live), _str(mirror))
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
            pattern = _glob_escape(layout.prefix) + ":*"
            return sum(1 for _ in self.client.scan_iter(match=pattern, count=5000))
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def _scan_chunks(self, layout: _Layout) -> Iterator[list[str]]:
        pattern = _glob_escape(layout.prefix) + ":*"
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

    def _drop_layout(self, layout: _Layout) -> int:
        deleted = 0
        try:
            for suffix in (":*", "#*"):
                pattern = _glob_escape(layout.prefix) + suffix
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


def _str(raw: Any) -> str | None:
    return None if raw is None else str(raw)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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


KIND = SinkKind("redis", RedisSinkConfig, RedisSink)
