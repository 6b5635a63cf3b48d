"""What a Redis sink reads: documents by id, ids, counts and sites' filters.

A read by id reads ``p@gen`` in the same ``MGET`` as the documents, so no
call uses a generation that a switch has left. Filters are answered by the
view's secondary indexes (``p#idx:...``, :mod:`connectors.redis.keys`):
:class:`~connectors.reads.Filterable`.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Generator, Iterator, Sequence

import redis.asyncio
import redis.exceptions as rex
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff

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

#: Reads of one chunk before a view that keeps switching generations fails.
_TRIES = 5


def _fetch_keys(layout: Layout, chunk: list[str]) -> list[str]:
    """One ``MGET`` (atomic) of the live generation, the mirrored one, and
    the versions and documents of ``chunk`` in ``layout``."""
    keys = [layout.generation_key, layout.mirror_key]
    keys += [layout.version_key(i) for i in chunk]
    keys += [layout.doc_key(i) for i in chunk]
    return keys


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
        steps = self._fetch_steps(view, ids, out)
        try:
            keys = next(steps)
            while True:
                keys = steps.send(self.client.mget(keys))
        except StopIteration:
            return out
        except rex.RedisError as exc:
            raise classify(exc) from exc

    async def afetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        """:meth:`fetch` on the running event loop (the server's get by id:
        no thread per read), through an asyncio client of the same settings
        made for that loop."""
        out: dict[str, Stored] = {}
        try:
            client = self._async_client()
            steps = self._fetch_steps(view, ids, out)
            keys = next(steps)
            while True:
                keys = steps.send(await client.mget(keys))
        except StopIteration:
            return out
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def _fetch_steps(
        self, view: str, ids: Sequence[str], out: dict[str, Stored]
    ) -> Generator[list[str], Sequence[bytes | str | None], None]:
        """The ``MGET`` s of a read by id, for :meth:`fetch` and
        :meth:`afetch` to send: yields each one's keys (:func:`_fetch_keys`),
        takes its values, and fills ``out``. A chunk is read again when the
        live generation was not the one its keys were built for."""
        if ids and view not in self._live:  # first read: which generation is live
            self._seen_values(view, (yield self._state_keys(view)))
        for start in range(0, len(ids), FETCH_CHUNK):
            chunk = list(ids[start : start + FETCH_CHUNK])
            for _ in range(_TRIES):
                layout = self._layout(view)
                values = yield _fetch_keys(layout, chunk)
                if self._took(view, layout, chunk, values, out):
                    break
            else:
                raise TransientError(f"redis: view {view} keeps switching generations")

    def _async_client(self) -> redis.asyncio.Redis:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aloop is not loop:
            self._aclient = self.cfg.connect_async(
                socket_timeout=self.cfg.timeout_s,
                socket_connect_timeout=self.cfg.timeout_s,
                decode_responses=True,
                retry=AsyncRetry(NoBackoff(), 0),
            )
            self._aloop = loop
        return self._aclient

    async def aclose(self) -> None:
        """Close the asyncio client (on the loop that used it). Safe twice."""
        client, self._aclient, self._aloop = self._aclient, None, None
        if client is not None:
            await client.aclose()

    def _took(
        self,
        view: str,
        layout: Layout,
        chunk: list[str],
        values: Sequence[bytes | str | None],
        out: dict[str, Stored],
    ) -> bool:
        """Take one chunk's ``MGET`` (:func:`_fetch_keys`) into ``out``:
        False, taking nothing, when the live generation is not the one the
        keys were built for (the caller reads again)."""
        live, mirror, *found = values
        state = parse_state(text_or_none(live), text_or_none(mirror))
        if self._seen(view, state) is not layout:
            return False
        for n, doc_id in enumerate(chunk):
            ver, body = found[n], found[n + len(chunk)]
            if ver is None:
                continue
            doc = None if body is None else loads_json(body)
            out[doc_id] = Stored(int(ver), doc)
        return True

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
