"""Generations of a Redis view, for ``snapshot --rebuild``.

Generation 1 uses the prefix ``p``, generation n > 1 the prefix ``p~n``;
``p@gen`` holds the live generation (absent: 1), and ``p@gen.mirror`` the
generation a rebuild is filling, if any: every write goes there first, then
to the live one (:mod:`connectors.redis.sink`). The switch sets ``p@gen`` and
deletes ``p@gen.mirror`` in one transaction
(:class:`~connectors.base.Generations`).
"""

from __future__ import annotations

import logging

import redis.exceptions as rex

from connectors.base import ViewTarget, mark_time
from connectors.redis.keys import Layout, generation_prefix, glob_escape
from connectors.redis.store import FETCH_CHUNK, RedisStore, classify

logger = logging.getLogger(__name__)


class RedisGenerations(RedisStore):
    """Creates, switches and drops the generations of a view's keys."""

    def generation(self, view: str) -> int:
        try:
            return self._resolve(view).gen
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def generation_target(self, view: str, gen: int) -> ViewTarget:
        target = self._target(view)
        return target.renamed(generation_prefix(target.name, gen))

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
                tx.set(layout.loaded_key, mark_time())  # the rebuild loaded it whole
                tx.execute()
        except rex.RedisError as exc:
            raise classify(exc) from exc
        self._live[view], self._mirrors[view] = gen, None
        logger.info("redis generation switched view=%s generation=%d", view, gen)

    def drop_generation(self, view: str, gen: int) -> None:
        self._refuse_live(view, gen, "drop")
        self._drop_layout(self._layout(view, gen))

    def loaded(self, view: str) -> bool:
        try:
            return bool(self.client.exists(Layout(self._target(view)).loaded_key))
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def mark_loaded(self, view: str) -> None:
        try:
            # NX: a view marked already keeps its mark as it was
            self.client.set(Layout(self._target(view)).loaded_key, mark_time(), nx=True)
        except rex.RedisError as exc:
            raise classify(exc) from exc

    def unmark(self, view: str) -> None:
        try:
            self.client.delete(Layout(self._target(view)).loaded_key)
        except rex.RedisError as exc:
            raise classify(exc) from exc

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
            deleted += int(self.client.unlink(layout.loaded_key))
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
                    if len(batch) >= FETCH_CHUNK:
                        deleted += int(self.client.unlink(*batch))
                        batch = []
                if batch:
                    deleted += int(self.client.unlink(*batch))
        except rex.RedisError as exc:
            raise classify(exc) from exc
        return deleted
