"""What a Redis sink reads: documents by id, ids, counts and sites' filters.

A read by id reads ``p@gen`` in the same ``MGET`` as the documents, so no
call uses a generation that a switch has left. Filters are answered by the
view's secondary indexes (``p#idx:...``, :mod:`connectors.redis.keys`):
:class:`~connectors.reads.Filterable`.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence

import redis.exceptions as rex

from connectors.base import Stored
from connectors.reads import Condition, Eq, Found, Range, Sort
from connectors.redis.keys import (
    Layout,
    glob_escape,
    index_value,
    is_number,
    parse_state,
    score_bounds,
    text_or_none,
)
from connectors.redis.store import FETCH_CHUNK, RedisStore, classify
from pipeline.errors import TransientError
from pipeline.types import loads_json


class RedisReads(RedisStore):
    """Reads by id (atomic with the generation), ids, and index filters."""

    filter_first = True  # its indexes answer before a document store

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

    def covers(self, view: str, where: dict[str, Condition], sort: Sort = ()) -> bool:
        """Whether the view's indexes answer every condition of ``where``
        (``eq`` for equality, ``range`` for bounds or a number) and the order
        (one key, a ``range`` index, asked among the conditions: a document
        without a value is in no ``range`` index)."""
        indexes = self.indexes(view)
        if len(sort) > 1 or any(
            indexes.get(name) != "range" or name not in where for name, _o in sort
        ):
            return False
        for name, cond in where.items():
            kind = indexes.get(name)
            if kind == "eq" and isinstance(cond, Eq):
                continue
            if kind == "range" and (isinstance(cond, Range) or is_number(cond.value)):
                continue
            return False
        return True

    def filter(
        self, view: str, where: dict[str, Condition], limit: int, sort: Sort = ()
    ) -> Found:
        """Ids from the view's indexes, intersected in Redis (one ``MULTI``:
        the range conditions' members into scratch sorted sets, all of them
        intersected at score 0, or at the sort field's score, its size, its
        first ``limit`` ids in id order or by that score (then id), the
        scratch keys deleted), then the documents (one ``MGET``). However many
        ids match, only ``limit`` of them leave Redis."""
        by, order = sort[0] if sort else (None, "asc")
        indexes = self.indexes(view)
        try:
            scratch = f"{self._resolve(view).index_base}~filter:{uuid.uuid4().hex}"
            inputs = [
                self.index_key(view, name, cond.value)
                for name, cond in where.items()
                if indexes[name] == "eq" and isinstance(cond, Eq)
            ]
            weights = dict.fromkeys(inputs, 0)
            tx = self.client.pipeline(transaction=True)
            for name, cond in where.items():
                if indexes[name] == "range":
                    low, high = score_bounds(cond)
                    part = f"{scratch}:{len(weights)}"
                    tx.zrangestore(
                        part, self.index_key(view, name), low, high, byscore=True
                    )
                    weights[part] = 1 if name == by else 0
            inputs = list(weights)
            tx.zinterstore(scratch, weights)
            tx.zcard(scratch)
            if by is None:
                tx.zrange(scratch, "-", "+", bylex=True, offset=0, num=limit)
            else:  # by score, equal scores by id (in reverse when descending)
                tx.zrange(scratch, 0, limit - 1, desc=order == "desc")
            tx.delete(scratch, *(k for k in inputs if k.startswith(scratch)))
            *_, total, page, _deleted = tx.execute()
        except rex.RedisError as exc:
            raise classify(exc) from exc
        stored = self.fetch(view, [str(i) for i in page])
        docs = {i: s.doc for i, s in stored.items() if s.doc is not None}
        return docs, int(total)

    def fetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        out: dict[str, Stored] = {}
        try:
            for start in range(0, len(ids), FETCH_CHUNK):
                chunk = list(ids[start : start + FETCH_CHUNK])
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
                doc = None if body is None else loads_json(body)
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
            if len(chunk) >= FETCH_CHUNK:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
