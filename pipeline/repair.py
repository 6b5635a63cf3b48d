"""``readside verify --repair``: rewrite the documents a sink got wrong.

A view read from the source (an aggregate view, :meth:`pipeline.views.View.
from_source`) re-reads the drifted roots in a new snapshot;
its version is newer than anything stored, so the guard lets the fresh
documents (and deletes, for roots that are gone) replace what drifted.

Table views are not repaired in place: their versions are event offsets, and
every sink refuses a write whose version is not newer than the stored one, so
no write can replace a document that drifted at its current version. They are
reported with the way out: rebuild the view's copy in that store (drop it,
then ``readside snapshot VIEW --sink NAME`` replays the compacted topic at the
stream's versions).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from connectors.base import Sink
from pipeline.aggregate.reader import Reader
from pipeline.verify import Drift
from pipeline.views import View

logger = logging.getLogger(__name__)


@dataclass
class Repaired:
    view: str
    sink: str
    written: int
    refused: int  # kept by the store's guard (needs a snapshot replay)


def _drifted(drift: Drift) -> list[str]:
    return sorted({*drift.missing, *drift.extra, *drift.differing})


def repair(
    views: Mapping[str, View],
    sinks: Mapping[str, Sink],
    drifts: list[Drift],
    dsn: str,
) -> list[Repaired]:
    """Rewrite the drifted documents of each ``drifts`` entry in its sink."""
    out: list[Repaired] = []
    reader = Reader(dsn)
    try:
        for drift in drifts:
            if drift.ok:
                continue
            source, sink = views[drift.view].from_source(), sinks[drift.sink]
            drifted = _drifted(drift)
            if source is None:
                logger.warning(
                    "table view not repaired in place view=%s sink=%s (rebuild: "
                    "drop its copy, then readside snapshot %s --sink %s)",
                    drift.view,
                    drift.sink,
                    drift.view,
                    drift.sink,
                )
                out.append(Repaired(drift.view, drift.sink, 0, len(drifted)))
                continue
            result = sink.write(source.reread_ids(reader, drifted))
            logger.info(
                "repaired view=%s sink=%s applied=%d stale=%d",
                drift.view,
                drift.sink,
                result.applied,
                result.stale,
            )
            out.append(Repaired(drift.view, drift.sink, result.applied, result.stale))
    finally:
        reader.close()
    return out
