"""The read client for sites: documents by id, filters and search, with the
store that answered and how fresh it is.

Reads by id go to the first store of the view's read order (Redis, then
MongoDB, then Elasticsearch by default) and fall to the next one when a store
is down or times out. Every input is validated before any store is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from connectors.base import Sink
from pipeline import config as config_mod
from pipeline.config import Config, ViewConfig
from pipeline.errors import TransientError
from query import stores, validate
from query.answer import Answer, Doc
from query.errors import StoreUnavailable, UnknownView
from query.freshness import FreshnessCache

logger = logging.getLogger(__name__)

#: Default read order, by sink type: an in-memory key-value store first.
DEFAULT_ORDER = ("redis", "mongodb", "elasticsearch")

T = TypeVar("T")


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
            not read. Default: redis, mongodb, elasticsearch.
        freshness: the checkpoint reader (default: one on the configured
            checkpoint topic, cached for one second).

    Example:
        >>> client = ReadClient("readside.yaml")
        >>> client.get("orders", "42").doc
    """

    def __init__(
        self,
        config: Config | str | Path,
        read_order: Sequence[str] | None = None,
        freshness: FreshnessCache | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else config_mod.load(config)
        self.read_order = tuple(read_order or DEFAULT_ORDER)
        self._sinks: dict[str, Sink] = {}
        self._freshness = freshness or FreshnessCache(
            self.config.kafka.bootstrap_servers, self.config.kafka.checkpoint_topic
        )

    # -- reads by id -------------------------------------------------------------

    def get(self, view: str, doc_id: str | int) -> Answer:
        """One document by id; ``doc`` is ``None`` if missing or deleted.

        Raises:
            UnknownView: the view is not configured.
            QueryError: the id is not a string or int.
            StoreUnavailable: every store of the read order failed.
        """
        ident = validate.doc_id(doc_id)
        answer = self.get_many(view, [ident])
        doc = answer.docs.get(ident)
        return Answer(
            view, answer.store, answer.freshness, doc=doc, total=int(doc is not None)
        )

    def get_many(self, view: str, ids: Sequence[str | int]) -> Answer:
        """Documents by id (at most 1000), one round trip to one store.

        Missing and deleted ids are absent from ``docs``.

        Raises:
            UnknownView, QueryError, StoreUnavailable: as :meth:`get`.
        """
        cfg = self._view(view)
        wanted = validate.doc_ids(ids)

        def read(sink: Sink) -> dict[str, Doc]:
            stored = sink.fetch(view, wanted) if wanted else {}
            return {i: s.doc for i, s in stored.items() if s.doc is not None}

        name, docs = self._first(view, self.ordered_sinks(view, cfg), read)
        return self._answer(view, name, docs, len(docs), size=len(wanted))

    # -- queries -------------------------------------------------------------------

    def filter(self, view: str, where: dict[str, Any], limit: int = 100) -> Answer:
        """Documents whose fields equal values or fall in numeric ranges.

        ``where`` maps plain field names to a scalar (equality) or to a dict of
        ``gt``/``gte``/``lt``/``lte`` bounds. Answered from Redis when the
        view has a Redis index for every field asked (``eq`` for equality,
        ``range`` for bounds), else from MongoDB; documents sorted by id.

        Raises:
            QueryError: a field name, operator or value is refused.
            UnknownView, StoreUnavailable: as :meth:`get`.
        """
        cfg = self._view(view)
        conds = validate.where(where)
        size = validate.limit(limit)
        candidates: list[tuple[str, Callable[[Sink], tuple[dict[str, Doc], int]]]] = []
        for name in cfg.sinks:
            kind = self.config.sinks[name].type
            if kind == "redis":
                sink: Any = self._sink(name)
                if stores.redis_covers(sink.indexes(view), conds):
                    candidates.insert(
                        0,
                        (name, lambda s: stores.redis_filter(s, view, conds, size)),
                    )
            elif kind == "mongodb":
                candidates.append(
                    (name, lambda s: stores.mongo_filter(s, view, conds, size))
                )
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
    ) -> Answer:
        """Full-text search on Elasticsearch, tombstones excluded.

        Args:
            view: the view to search.
            query: Lucene ``query_string`` text (leading wildcards refused).
            filters: field -> value (``term``) or list of values (``terms``);
                matched against the field as mapped (use keyword fields).
            sort: field names, ``-field`` for descending.
            page: 1-based page number.
            size: hits per page, 1 to 1000.

        Returns:
            An answer whose ``docs`` are the page's hits in order and whose
            ``total`` counts every match. Documents become searchable at the
            index's next refresh, which may follow ``applied_lsn``.

        Raises:
            QueryError: bad input, or Elasticsearch refused the query.
            UnknownView, StoreUnavailable: as :meth:`get`.
        """
        cfg = self._view(view)
        text = validate.query_text(query)
        terms = validate.search_filters(filters)
        keys = validate.sort_keys(sort)
        number, per_page = validate.page(page, size)
        body = stores.es_body(text, terms, keys)
        names = [n for n in cfg.sinks if self.config.sinks[n].type == "elasticsearch"]
        if not names:
            raise StoreUnavailable(view, [], "the view has no Elasticsearch sink")
        candidates: list[tuple[str, Callable[[Sink], tuple[dict[str, Doc], int]]]] = [
            (n, lambda s: stores.es_search(s, view, body, number, per_page))
            for n in names
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

    # -- plumbing ------------------------------------------------------------------

    def ordered_sinks(self, view: str, cfg: ViewConfig | None = None) -> list[str]:
        """The sinks of ``view`` that ``get`` tries, in order."""
        cfg = cfg or self._view(view)

        def rank(name: str) -> int:
            kind = self.config.sinks[name].type
            for pos, wanted in enumerate(self.read_order):
                if wanted in (name, kind):
                    return pos
            return -1

        ranked = [(rank(n), n) for n in cfg.sinks]
        return [n for r, n in sorted(ranked) if r >= 0]

    def _view(self, view: str) -> ViewConfig:
        try:
            return self.config.views[view]
        except KeyError:
            raise UnknownView(view, list(self.config.views)) from None

    def _sink(self, name: str) -> Sink:
        if name not in self._sinks:
            from connectors.registry import build_sink
            from pipeline.worker import targets_for

            cfg = self.config.sinks[name]
            self._sinks[name] = build_sink(name, cfg, targets_for(self.config, name))
        return self._sinks[name]

    def _first(
        self, view: str, names: Sequence[str], read: Callable[[Sink], T]
    ) -> tuple[str, T]:
        """Run ``read`` on the first sink of ``names`` that is up."""
        failures: list[str] = []
        for name in names:
            try:
                return name, read(self._sink(name))
            except TransientError as exc:
                logger.warning("store unavailable view=%s sink=%s: %s", view, name, exc)
                failures.append(f"{name}: {exc}")
        raise StoreUnavailable(view, list(names), "; ".join(failures) or "no store")

    def _query(
        self,
        view: str,
        candidates: Sequence[tuple[str, Callable[[Sink], tuple[dict[str, Doc], int]]]],
        size: int,
    ) -> Answer:
        funcs = dict(candidates)
        name, (docs, total) = self._first(
            view, [n for n, _f in candidates], lambda s: funcs[s.name](s)
        )
        return self._answer(view, name, docs, total, size)

    def _answer(
        self, view: str, sink: str, docs: dict[str, Doc], total: int, size: int
    ) -> Answer:
        fresh = self._freshness.freshness(view, sink)
        return Answer(view, sink, fresh, docs=docs, total=total, size=size)

    def close(self) -> None:
        """Close every store client and the checkpoint reader. Safe twice."""
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
        self._freshness.close()

    def __enter__(self) -> ReadClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
