"""Redis sink: documents as JSON strings, guarded by one server-side Lua script.

The sink of the store :mod:`connectors.redis`: writes, generations, and the
filters its secondary indexes answer for sites
(:class:`~connectors.reads.Filterable`); what it waits for before
acknowledging is in :mod:`connectors.redis.wait`. This module holds the
writes; the client and the layouts are in :mod:`connectors.redis.store`, the
generations in :mod:`connectors.redis.generations`, the reads in
:mod:`connectors.redis.reads`.

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

import logging
import time
from collections.abc import Sequence
from typing import Any

import redis.exceptions as rex

from connectors.base import WriteResult, mirrored
from connectors.redis.generations import RedisGenerations
from connectors.redis.keys import (
    GUARD_SCRIPT,
    Layout,
    index_value,
    parse_state,
    state_text,
    to_json,
)
from connectors.redis.reads import RedisReads
from connectors.redis.store import classify
from pipeline.errors import BadRecord, TransientError
from pipeline.events import Delete, DocumentOp, Upsert, version_key

logger = logging.getLogger(__name__)


class RedisSink(RedisGenerations, RedisReads):
    """Keeps views as JSON strings in Redis, version-guarded by a Lua script.

    Its constructor is :class:`~connectors.redis.store.RedisStore`'s.
    """

    def write(self, ops: Sequence[DocumentOp]) -> WriteResult:
        """Apply ``ops`` (see :meth:`Sink.write`), then wait for the append-only
        file and replicas as configured before returning."""
        if ops and time.monotonic() >= self._policy_due:
            try:
                self._refuse_eviction()
            except rex.RedisError as exc:
                raise classify(exc) from exc
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
        # The documents' keys and arguments go as bytes: redis-py sends bytes
        # as they are and encodes each str in Python (a third of the cost).
        keys: list[str | bytes] = []
        per_doc: list[str | bytes] = []
        sent: list[DocumentOp] = []
        for op in ops:
            try:
                args = self._doc_args(layout, fields, op)
            except BadRecord as exc:
                result.rejected.append((op, str(exc)))
                continue
            keys += [
                layout.doc_key(op.doc_id).encode(),
                layout.version_key(op.doc_id).encode(),
            ]
            if fields:
                keys.append(layout.index_values_key(op.doc_id))
            per_doc += args
            sent.append(op)
        if not sent:
            return result
        head: list[str | bytes] = [layout.generation_key, state]
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
    def _doc_args(
        layout: Layout, fields: list[str], op: DocumentOp
    ) -> list[str | bytes]:
        version = version_key(op.version).encode()
        if isinstance(op, Delete):
            return [b"d", version, b"", op.doc_id.encode()] + [""] * len(fields)
        assert isinstance(op, Upsert)
        body = to_json(op.doc)  # raises on UNCHANGED too: it is not serializable
        values = [index_value(layout.indexes[f], op.doc.get(f)) for f in fields]
        return [b"u", version, body, op.doc_id.encode(), *values]

    def _evalsha(self, keys: list[str | bytes], args: list[str | bytes]) -> list[Any]:
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
