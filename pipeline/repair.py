"""``readside verify --repair``: rewrite the documents a sink got wrong.

Aggregate views re-read the drifted roots from the source in a new snapshot;
its version is newer than anything stored, so the guard lets the fresh
documents (and deletes, for roots that are gone) replace what drifted.

Table views take their versions from the stream, so a repair may only
rewrite a document at the version the store already holds (equal versions
carry equal content by the rule, so this restores it): differing and extra
documents are fixed that way. A missing document is written at version 0,
which the store refuses if it holds a newer tombstone; those are reported,
and `readside snapshot VIEW --sink NAME` (a replay of the topic) fixes them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from connectors.base import Sink
from pipeline.aggregate import AggregateView, Pending
from pipeline.aggregate.reader import Reader
from pipeline.events import Delete, DocumentOp, Upsert
from pipeline.verify import Drift, expected_documents
from pipeline.views import TableView, View

logger = logging.getLogger(__name__)


@dataclass
class Repaired:
    view: str
    sink: str
    written: int
    refused: int  # kept by the store's guard (needs a snapshot replay)


def key_of(doc_id: str, columns: int) -> tuple[str, ...]:
    """The key values of a document id (inverse of ``views.doc_id``)."""
    if columns == 1:
        return (doc_id,)
    parts = doc_id.split(":")
    return tuple(p.replace("%3A", ":").replace("%25", "%") for p in parts)


def _drifted(drift: Drift) -> list[str]:
    return sorted({*drift.missing, *drift.extra, *drift.differing})


def _aggregate_ops(
    view: AggregateView, reader: Reader, ids: list[str]
) -> list[DocumentOp]:
    width = len(view.tree().table.primary_key)
    pending = Pending(root_keys={key_of(i, width) for i in ids})
    return view.reread(reader, pending)


def _table_ops(
    view: TableView, sink: Sink, conn: psycopg.Connection[object], drift: Drift
) -> list[DocumentOp]:
    expected = expected_documents(conn, view)
    ids = _drifted(drift)
    stored = sink.fetch(view.name, ids)
    ops: list[DocumentOp] = []
    for ident in ids:
        version = stored[ident].version if ident in stored else 0
        if ident in expected:
            ops.append(Upsert(view.name, ident, version, expected[ident]))
        else:
            ops.append(Delete(view.name, ident, version))
    return ops


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
        with psycopg.connect(dsn, autocommit=True) as conn:
            for drift in drifts:
                if drift.ok:
                    continue
                view, sink = views[drift.view], sinks[drift.sink]
                if isinstance(view, AggregateView):
                    ops = _aggregate_ops(view, reader, _drifted(drift))
                else:
                    ops = _table_ops(view, sink, conn, drift)
                result = sink.write(ops)
                logger.info(
                    "repaired view=%s sink=%s ops=%d applied=%d stale=%d",
                    drift.view,
                    drift.sink,
                    len(ops),
                    result.applied,
                    result.stale,
                )
                out.append(
                    Repaired(drift.view, drift.sink, result.applied, result.stale)
                )
    finally:
        reader.close()
    return out
