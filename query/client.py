"""The read client for sites: documents by id, filters and search, with the
store that answered and how fresh it is.

Reads by id go to the first store of the view's read order (Redis, then
MongoDB, then Elasticsearch by default) and fall to the next one when a store
is down or times out (the store clients and that fallback are
:class:`query.stores.Stores`). Every input is validated before any store is
asked.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from connectors.base import Sink, Stored
from connectors.reads import AsyncFetch, Filterable, Found, Searchable, SearchRefused
from pipeline import config as config_mod
from pipeline.config import Config
from pipeline.errors import TransientError
from pipeline.viewconfig import ViewConfig
from query import lsn as lsn_mod
from query import validate
from query.answer import Answer, Doc, Freshness
from query.errors import OutOfFocus, QueryError, StoreUnavailable, UnknownView
from query.freshness import FreshnessCache
from query.joined import JoinedReads
from query.stores import Stores
from query.watermark import WatermarkTracker

#: How long a read with ``min_lsn`` waits for the watermark by default.
DEFAULT_WAIT_S = 5.0

#: Default read order, by sink type: an in-memory key-value store first.
DEFAULT_ORDER = ("redis", "mongodb", "elasticsearch", "opensearch")


class ReadClient:
    """Reads views from the stores a readside pipeline keeps.

    One client per store, created on first use and reused by every call
    (redis-py and pymongo pool their connections; so does elasticsearch-py).
    Timeouts are the sinks' ``timeout_s``. The client never creates indexes
    or collections. Thread-safe as far as the drivers are.

    Args:
        config: the pipeline's configuration, or the path of its file.
        read_order: sink names or sink types in the order ``get`` and
            ``get_many`` try them; sinks of a view that it does not name are
            not read. Default: redis, mongodb, elasticsearch, opensearch.
        freshness: the checkpoint reader (default: one on the configured
            checkpoint topic, cached for one second).
        watermarks: the safe-watermark tracker that reads with ``min_lsn``
            wait on (default: one created at the first such read).
        wait_s: how long a read with ``min_lsn`` waits before it raises
            :class:`~query.errors.NotYetFresh`.
        focus: read through this focus (see :meth:`resolve`): a view name
            maps to the focus's derived view and other views are refused.

    Example:
        >>> client = ReadClient("readside.yaml")
        >>> client.get("orders", "42").doc
    """

    def __init__(
        self,
        config: Config | str | Path,
        read_order: Sequence[str] | None = None,
        freshness: FreshnessCache | None = None,
        watermarks: WatermarkTracker | None = None,
        wait_s: float = DEFAULT_WAIT_S,
        focus: str | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else config_mod.load(config)
        if focus is not None:
            self.config.focus_view(focus)  # ConfigError for an unknown focus
        self.focus = focus
        self.read_order = tuple(read_order or DEFAULT_ORDER)
        self._views = self.config.effective_views()  # fixed once loaded
        self._orders: dict[tuple[str, tuple[str, ...]], list[str]] = {}
        self._stores = Stores(self.config)
        self._async: dict[str, AsyncFetch | None] = {}
        self._joined = JoinedReads()
        self._freshness = freshness or FreshnessCache(
            self.config.kafka, self.config.kafka.checkpoint_topic
        )
        self.wait_s = wait_s
        self._watermarks = watermarks
        self._own_watermarks = watermarks is None
        self._refreshed: dict[tuple[str, str], float] = {}
        self._refresh_lock = threading.Lock()

    # -- reads by id -------------------------------------------------------------

    def get(
        self, view: str, doc_id: str | int, *, min_lsn: int | str | None = None
    ) -> Answer:
        """One document by id; ``doc`` is ``None`` if missing or deleted.

        ``min_lsn`` (every read takes it): answer only once the view's safe
        watermark reaches this LSN (``'16/B374D848'`` or an int, e.g. from
        :func:`query.lsn.commit_lsn` after a commit), waiting up to
        ``wait_s``.

        Raises:
            UnknownView: the view is not configured.
            QueryError: the id is not a string or int, or a bad ``min_lsn``.
            StoreUnavailable: every store of the read order failed.
            NotYetFresh: the watermark did not reach ``min_lsn`` in time.
        """
        ident = validate.doc_id(doc_id)
        return self._one(self.get_many(view, [ident], min_lsn=min_lsn), ident)

    @staticmethod
    def _one(answer: Answer, ident: str) -> Answer:
        """The answer of a read by id of ``ident`` from that of its ids."""
        doc = answer.docs.get(ident)
        return Answer(
            answer.view,
            answer.store,
            answer.freshness,
            doc=doc,
            total=int(doc is not None),
        )

    async def aget(
        self,
        view: str,
        doc_id: str | int,
        off_loop: Callable[[Callable[[], Answer]], Awaitable[Answer]],
    ) -> Answer:
        """:meth:`get` (without ``min_lsn``) for a caller on an event loop.

        When the view's first store reads on the loop
        (:class:`~connectors.reads.AsyncFetch`) it is read there, with no
        thread; otherwise, or when it is down, ``off_loop`` (the caller's
        way to run a blocking call on a thread) runs the read of the other
        stores as :meth:`get` does, in the same order. Reads of a view that
        arrive while one is out go to the store together
        (:class:`~query.joined.JoinedReads`), so every call of one client
        comes from one event loop (the server's).

        Raises:
            UnknownView, OutOfFocus, QueryError, StoreUnavailable: as :meth:`get`.
        """
        ident = validate.doc_id(doc_id)
        view = self.resolve(view)
        names = self.ordered_sinks(view)
        failed: list[tuple[str, TransientError]] = []
        first = names[0] if names else ""
        sink = self._async_sink(first) if names else None
        if sink is not None:
            try:
                stored = await self._joined.fetch(sink, view, [ident])
            except TransientError as exc:
                self._stores.unavailable(view, first, exc)
                failed.append((first, exc))
                names = names[1:]
            else:
                docs = _live(stored)
                fresh = self._freshness.cached(view, first)
                if fresh is None:  # a look at the checkpoints is due
                    return await off_loop(
                        lambda: self._one(self._answer(view, first, docs), ident)
                    )
                return self._one(self._answer(view, first, docs, fresh=fresh), ident)
        return await off_loop(
            lambda: self._one(self._read_ids(view, [ident], names, failed), ident)
        )

    def _async_sink(self, name: str) -> AsyncFetch | None:
        """Sink ``name`` if it reads on the event loop (the check is kept:
        a protocol check costs more than the rest of a lookup)."""
        if name not in self._async:
            sink = self._stores.get(name)
            self._async[name] = sink if isinstance(sink, AsyncFetch) else None
        return self._async[name]

    def get_many(
        self,
        view: str,
        ids: Sequence[str | int],
        *,
        min_lsn: int | str | None = None,
    ) -> Answer:
        """Documents by id (at most 1000), one round trip to one store.

        Missing and deleted ids are absent from ``docs``.

        Raises:
            UnknownView, QueryError, StoreUnavailable, NotYetFresh: as
            :meth:`get`.
        """
        view = self.resolve(view)
        cfg = self._view(view)
        wanted = validate.doc_ids(ids)
        self.await_lsn(view, min_lsn)
        return self._read_ids(view, wanted, self.ordered_sinks(view, cfg))

    def _read_ids(
        self,
        view: str,
        wanted: list[str],
        names: Sequence[str],
        failed: Sequence[tuple[str, TransientError]] = (),
    ) -> Answer:
        """The live documents of ``wanted`` from the first of ``names`` that
        answers (``failed``: stores tried before them)."""

        def read(sink: Sink) -> dict[str, Doc]:
            return _live(sink.fetch(view, wanted)) if wanted else {}

        name, docs = self._stores.first(view, names, read, failed)
        return self._answer(view, name, docs, size=len(wanted))

    # -- queries -------------------------------------------------------------------

    def filter(
        self,
        view: str,
        where: dict[str, Any],
        limit: int = 100,
        *,
        sort: list[str] | None = None,
        min_lsn: int | str | None = None,
    ) -> Answer:
        """Documents whose fields equal values or fall in ranges, by ``sort``
        (``-field``: descending) then id. ``where``: field -> scalar, or
        ``gt``/``gte``/``lt``/``lte`` -> number or ISO 8601 date/timestamp.
        From Redis when its indexes cover the fields (``eq``, ``range``; a
        sort by one ``range`` field asked), else MongoDB (docs/query-api.md).

        Raises:
            QueryError: a field name, operator or value is refused.
            UnknownView, StoreUnavailable, NotYetFresh: as :meth:`get`.
        """
        view = self.resolve(view)
        cfg = self._view(view)
        conds = validate.where(where)
        size = validate.limit(limit)
        keys = validate.sort_keys(sort)
        self.await_lsn(view, min_lsn)

        def run(s: Sink) -> Found:
            assert isinstance(s, Filterable)
            return s.filter(view, conds, size, keys)

        candidates: list[tuple[str, Callable[[Sink], Found]]] = []
        for name in cfg.sinks:
            sink = self._sink(name)
            if isinstance(sink, Filterable) and sink.covers(view, conds, keys):
                at = 0 if sink.filter_first else len(candidates)
                candidates.insert(at, (name, run))
        if not candidates:
            raise StoreUnavailable(view, [], "no MongoDB sink or covering Redis index")
        return self._query(view, candidates, size)

    def search(
        self,
        view: str,
        query: str | None = None,
        filters: dict[str, Any] | None = None,
        sort: list[str] | None = None,
        page: int = 1,
        size: int = 20,
        *,
        min_lsn: int | str | None = None,
    ) -> Answer:
        """Full-text search on Elasticsearch, tombstones excluded.

        Args:
            view: the view to search.
            query: Lucene ``query_string`` text (leading wildcards refused).
            filters: field -> value (``term``), list of values (``terms``)
                or ``{"gte": 5, "lt": 10}`` bounds (``range``: numbers, or
                ISO 8601 dates and timestamps); matched against the field as
                mapped (docs/types.md: numerics and timestamps are numbers and
                dates, text has a ``.keyword`` sub-field).
            sort: field names, ``-field`` for descending.
            page: 1-based page number.
            size: hits per page, 1 to 1000.

        Returns:
            An answer whose ``docs`` are the page's hits in order and whose
            ``total`` counts every match. Documents become searchable at the
            index's next refresh; with ``min_lsn`` the index is refreshed
            once the watermark is reached (one refresh serves every search
            that reached it before the refresh started).

        Raises:
            QueryError: bad input, or Elasticsearch refused the query.
            UnknownView, StoreUnavailable, NotYetFresh: as :meth:`get`.
        """
        view = self.resolve(view)
        cfg = self._view(view)
        text = validate.query_text(query)
        terms = validate.search_filters(filters)
        keys = validate.sort_keys(sort)
        number, per_page = validate.page(page, size)
        names = [n for n in cfg.sinks if isinstance(self._sink(n), Searchable)]
        if not names:
            raise StoreUnavailable(view, [], "the view has no Elasticsearch sink")
        reached = time.monotonic() if self.await_lsn(view, min_lsn) else None

        def run(s: Sink) -> Found:
            assert isinstance(s, Searchable)
            if reached is not None:
                self._refresh_since(s, view, reached)
            try:
                return s.search(view, text, terms, keys, number, per_page)
            except SearchRefused as exc:
                raise QueryError("query", str(exc)) from exc

        candidates: list[tuple[str, Callable[[Sink], Found]]] = [
            (n, run) for n in names
        ]
        answer = self._query(view, candidates, per_page)
        return Answer(
            view,
            answer.store,
            answer.freshness,
            docs=answer.docs,
            total=answer.total,
            page=number,
            size=per_page,
        )

    # -- read-your-writes ----------------------------------------------------------

    @property
    def watermarks(self) -> WatermarkTracker:
        """The safe-watermark tracker (created on first use)."""
        if self._watermarks is None:
            self._watermarks = WatermarkTracker(self.config)
        return self._watermarks

    def await_lsn(self, view: str, min_lsn: int | str | None) -> bool:
        """Wait until ``view``'s watermark reaches ``min_lsn`` (no-op if None).

        Returns whether there was anything to wait for.

        Raises:
            QueryError: ``min_lsn`` is not an LSN.
            NotYetFresh: ``wait_s`` passed first.
        """
        if min_lsn is None:
            return False
        wanted = lsn_mod.parse(min_lsn)
        view = self.resolve(view)
        self.watermarks.wait(view, wanted, self.wait_s)
        return True

    def _refresh_since(self, sink: Searchable, view: str, since: float) -> None:
        """Refresh the view's index unless a refresh started after ``since``."""
        key = (sink.name, view)
        with self._refresh_lock:
            if self._refreshed.get(key, -1.0) >= since:
                return
            started = time.monotonic()
            sink.refresh(view)
            self._refreshed[key] = started

    # -- plumbing ------------------------------------------------------------------

    def ordered_sinks(self, view: str, cfg: ViewConfig | None = None) -> list[str]:
        """The sinks of ``view`` that ``get`` tries, in order: ``read_order``'s,
        with the sinks its workers found not holding the view whole (a store
        that lost it, until it is loaded again: :mod:`pipeline.loaded`) after
        the others, so a whole store answers while one is there."""
        view = self.resolve(view)
        known = self._orders.get((view, self.read_order))
        if known is not None:
            lost = self._freshness.unloaded_sinks(view)
            if lost:
                return sorted(known, key=lambda n: n in lost)
            return list(known)
        cfg = cfg or self._view(view)

        def rank(name: str) -> int:
            kind = self.config.sinks[name].type
            for pos, wanted in enumerate(self.read_order):
                if wanted in (name, kind):
                    return pos
            return -1

        ranked = [(rank(n), n) for n in cfg.sinks]
        self._orders[(view, self.read_order)] = [n for r, n in sorted(ranked) if r >= 0]
        return self.ordered_sinks(view)

    def resolve(self, view: str) -> str:
        """The view that answers a read of ``view``.

        Without a focus, ``view`` itself. With a focus, its derived view
        (``customers`` and ``customers.eu`` both answer from
        ``customers.eu`` for focus ``eu``); any other view is refused, so a
        site bound to one focus never reads another focus's stores.

        Raises:
            UnknownView: the view is not configured (404).
            OutOfFocus: the client's focus does not cover the view (403).
        """
        if view not in self._views:
            raise UnknownView(view, self.views())
        if self.focus is None:
            return view
        own = self.config.focus_view(self.focus)
        if view in (own, self.config.focuses[self.focus].view):
            return own
        raise OutOfFocus(view, self.focus, self.views())

    def views(self) -> list[str]:
        """The views this client may read (all views without a focus)."""
        if self.focus is None:
            return list(self._views)
        return [
            self.config.focuses[self.focus].view,
            self.config.focus_view(self.focus),
        ]

    def _view(self, view: str) -> ViewConfig:
        try:
            return self._views[view]
        except KeyError:
            raise UnknownView(view, self.views()) from None

    def _sink(self, name: str) -> Sink:
        return self._stores.get(name)

    def _query(
        self,
        view: str,
        candidates: Sequence[tuple[str, Callable[[Sink], Found]]],
        size: int,
    ) -> Answer:
        funcs = dict(candidates)
        name, (docs, total) = self._stores.first(
            view, [n for n, _f in candidates], lambda s: funcs[s.name](s)
        )
        return self._answer(view, name, docs, total, size)

    def _answer(
        self,
        view: str,
        sink: str,
        docs: dict[str, Doc],
        total: int | None = None,
        size: int | None = None,
        fresh: Freshness | None = None,
    ) -> Answer:
        """An answer from ``sink``: its freshness (looked up unless given)
        and the view's watermark; ``total`` and ``size`` default to how many
        documents there are."""
        if fresh is None:
            fresh = self._freshness.freshness(view, sink)
        if self._watermarks is not None:
            mark = self._watermarks.watermark(view)
            fresh = dataclasses.replace(fresh, watermark_lsn=mark)
        count = len(docs)
        return Answer(
            view,
            sink,
            fresh,
            docs=docs,
            total=count if total is None else total,
            size=count if size is None else size,
        )

    @property
    def freshness(self) -> FreshnessCache:
        """The checkpoint reader behind every answer's freshness."""
        return self._freshness

    def sink(self, name: str) -> Sink:
        """The client of sink ``name`` (created on first use)."""
        return self._sink(name)

    def warm(self) -> None:
        """Create every store client now (a server calls it before serving,
        so that threads never race to create one)."""
        self._stores.warm()

    async def aclose(self) -> None:
        """Close the store clients :meth:`aget` used, on its event loop
        (before :meth:`close`). Safe twice."""
        await self._joined.aclose()
        await self._stores.aclose()

    def close(self) -> None:
        """Close every store client and the checkpoint reader. Safe twice."""
        self._async.clear()
        self._stores.close()
        self._freshness.close()
        if self._own_watermarks and self._watermarks is not None:
            self._watermarks.close()

    def __enter__(self) -> ReadClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _live(stored: dict[str, Stored]) -> dict[str, Doc]:
    """The documents of a read by id, tombstones left out."""
    return {i: s.doc for i, s in stored.items() if s.doc is not None}
