"""Generations of an Elasticsearch view, for ``snapshot --rebuild``.

Generation n of a view is the index ``{alias}-{n:06d}``; the alias names the
live one, and one ``_aliases`` call moves it (atomic in Elasticsearch). While
a rebuild fills a generation, the alias ``{alias}.mirror`` names it: every
write then goes there first (``require_alias``, so a write that races the
switch never creates an index), then through the alias
(:class:`~connectors.base.Generations`; the writes are in
:mod:`connectors.elasticsearch.sink`).
"""

from __future__ import annotations

import logging
from typing import Any

import elasticsearch

from connectors.base import ViewTarget, mark_time
from connectors.elasticsearch.store import ERRORS, ElasticsearchStore
from pipeline.errors import FatalError

logger = logging.getLogger(__name__)

#: the key of the load mark in an index's mapping ``_meta``
LOADED = "readside_loaded"


class ElasticsearchGenerations(ElasticsearchStore):
    """Creates, switches and drops the generations of a view's index."""

    def generation(self, view: str) -> int:
        alias = self.alias(view)
        try:
            found = self.client.indices.get_alias(name=alias)
        except elasticsearch.NotFoundError:
            raise FatalError(
                f"{self.store} sink {self.name}: no alias {alias} (is the view "
                "written yet, or an index of that name in its place?)"
            ) from None
        except ERRORS as exc:
            raise self.classify(exc) from exc
        gens = []
        for index in found.body:
            head, _, number = str(index).rpartition("-")
            if head != alias or not number.isdigit():
                raise FatalError(
                    f"{self.store} sink {self.name}: alias {alias} names index "
                    f"{index}, not one of its generations ({alias}-NNNNNN)"
                )
            gens.append(int(number))
        return max(gens)

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        # Its "alias" is the concrete index, which exists before it is used.
        target = self.targets[view]
        return target.renamed(f"{target.name}-{gen:06d}")

    def create_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "create")
        index = self._generation_index(view, gen)
        mirror = self._mirror(view)
        try:
            self.client.indices.delete(index=index, ignore_unavailable=True)
            if self.client.indices.exists_alias(name=mirror):
                self.client.indices.delete_alias(index="_all", name=mirror)
            self._create_index(index, self.targets[view], {mirror: {}})
        except ERRORS as exc:
            raise self.classify(exc) from exc
        logger.info("elasticsearch generation created index=%s", index)

    def switch_generation(self, view: str, gen: int) -> None:
        alias = self.alias(view)
        index = self._generation_index(view, gen)
        try:
            held = list(self.client.indices.get_alias(name=alias).body)
            actions: list[dict[str, Any]] = [
                {"remove": {"index": old, "alias": alias}}
                for old in held
                if old != index
            ]
            actions.append(
                {"add": {"index": index, "alias": alias, "is_write_index": True}}
            )
            mirror = self._mirror(view)
            if self.client.indices.exists_alias(name=mirror, index=index):
                actions.append({"remove": {"index": index, "alias": mirror}})
            self._mark(index)  # the rebuild loaded it whole
            self.client.indices.update_aliases(actions=actions)
        except ERRORS as exc:
            raise self.classify(exc) from exc
        logger.info("elasticsearch alias switched alias=%s index=%s", alias, index)

    def loaded(self, view: str) -> bool:
        """Whether the index behind the view's alias carries the mark in its
        mapping's ``_meta`` (an index deleted and made again, by the sink or
        by a write that found no alias, does not)."""
        alias = self.alias(view)
        try:
            if not self.client.indices.exists_alias(name=alias):
                return False
            found = self.client.indices.get_mapping(index=alias).body
        except ERRORS as exc:
            raise self.classify(exc) from exc
        return bool(found) and all(
            LOADED in (held.get("mappings", {}).get("_meta") or {})
            for held in found.values()
        )

    def mark_loaded(self, view: str) -> None:
        try:
            self._mark(self.alias(view))
        except ERRORS as exc:
            raise self.classify(exc) from exc

    def _mark(self, index: str) -> None:
        """Add the load mark to the ``_meta`` of ``index`` (an index or alias),
        keeping what else the ``_meta`` holds."""
        found = self.client.indices.get_mapping(index=index).body
        for name, held in found.items():
            meta = dict(held.get("mappings", {}).get("_meta") or {})
            if LOADED in meta:
                continue  # marked already: kept as it was
            meta[LOADED] = mark_time()
            self.client.indices.put_mapping(index=name, meta=meta)

    def unmark(self, view: str) -> None:
        """Take the load mark out of the ``_meta`` of the index behind the
        view's alias, keeping the rest (a ``_meta`` put whole replaces it)."""
        alias = self.alias(view)
        try:
            if not self.client.indices.exists_alias(name=alias):
                return
            found = self.client.indices.get_mapping(index=alias).body
            for name, held in found.items():
                meta = dict(held.get("mappings", {}).get("_meta") or {})
                if meta.pop(LOADED, None) is not None:
                    self.client.indices.put_mapping(index=name, meta=meta)
        except ERRORS as exc:
            raise self.classify(exc) from exc

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        try:
            self.client.indices.delete(
                index=self._generation_index(view, gen), ignore_unavailable=True
            )
        except ERRORS as exc:
            raise self.classify(exc) from exc

    def drop(self, view: str) -> None:
        """Delete the view's alias and indexes (rebuilds and tests; not in the
        protocol)."""
        alias = self.alias(view)
        try:
            mirror = self._mirror(view)  # an unfinished rebuild's index
            if self.client.indices.exists_alias(name=mirror):
                found = self.client.indices.get_alias(name=mirror)
                self.client.indices.delete(index=",".join(found.keys()))
            if self.client.indices.exists_alias(name=alias):
                found = self.client.indices.get_alias(name=alias)
                self.client.indices.delete(index=",".join(found.keys()))
            elif self.client.indices.exists(index=alias):
                self.client.indices.delete(index=alias)
        except ERRORS as exc:
            raise self.classify(exc) from exc
