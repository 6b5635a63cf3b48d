"""The stores a read client asks: one sink client each, and the fallback.

:class:`Stores` builds the client of each configured sink on first use
(through :mod:`connectors.registry`, so a store added by an entry point is
read like the shipped ones) and keeps it for every later read;
:meth:`Stores.first` runs a read on the first store of a list that answers,
falling to the next one when a store is down or times out. Which stores a
view is read from, and in what order, is decided by
:class:`query.client.ReadClient`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from connectors.base import Sink
from connectors.reads import AsyncFetch
from connectors.registry import build_sink, targets_for
from pipeline.config import Config
from pipeline.errors import TransientError
from query.errors import StoreUnavailable

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Stores:
    """The sink clients of one configuration, created on first use.

    Thread-safe as far as the drivers are once :meth:`warm` has run.
    """

    def __init__(self, config: Config) -> None:
        self.config = config
        self._sinks: dict[str, Sink] = {}

    def get(self, name: str) -> Sink:
        """The client of sink ``name`` (created on first use)."""
        if name not in self._sinks:
            cfg = self.config.sinks[name]
            self._sinks[name] = build_sink(name, cfg, targets_for(self.config, name))
        return self._sinks[name]

    def warm(self) -> None:
        """Create every store client now."""
        for name in self.config.sinks:
            self.get(name)

    def first(
        self,
        view: str,
        names: Sequence[str],
        read: Callable[[Sink], T],
        failed: Sequence[tuple[str, TransientError]] = (),
    ) -> tuple[str, T]:
        """Run ``read`` on the first sink of ``names`` that is up.

        ``failed``: stores of the view already tried, before ``names``, and
        why they did not answer (named in the error if no store answers).

        Raises:
            StoreUnavailable: every one of them raised a transient error.
        """
        failures = [(name, str(exc)) for name, exc in failed]
        for name in names:
            try:
                return name, read(self.get(name))
            except TransientError as exc:
                self.unavailable(view, name, exc)
                failures.append((name, str(exc)))
        raise StoreUnavailable(
            view,
            [name for name, _why in failures] or list(names),
            "; ".join(f"{name}: {why}" for name, why in failures) or "no store",
        )

    @staticmethod
    def unavailable(view: str, name: str, exc: TransientError) -> None:
        """Say that store ``name`` could not answer a read of ``view``."""
        logger.warning("store unavailable view=%s sink=%s: %s", view, name, exc)

    async def aclose(self) -> None:
        """Close the clients that read on the event loop (on that loop).
        Safe twice."""
        for sink in self._sinks.values():
            if isinstance(sink, AsyncFetch):
                await sink.aclose()

    def close(self) -> None:
        """Close every store client created so far. Safe twice."""
        for sink in self._sinks.values():
            sink.close()
        self._sinks.clear()
