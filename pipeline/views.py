"""Table views: one document per source row, built from the event alone.

The version of every document op is the event's position in its partition,
``table_version(epoch, offset)`` (docs/design.md: why not the LSN). After a rebuild
on a new topic layout the view's epoch starts at a per-partition offset
(:mod:`pipeline.layout`): events below it belong to the older epoch, whose
generation the rebuild replaced, and are not applied. A row that leaves
the view's focus filter, or that a transform drops, becomes a delete at that
version, so the stores forget it.

A tombstone (a record with a key and no value) deletes its key at its own
offset. Debezium writes one right after each delete; once compaction has
run it is the only trace of that delete, so a worker that was behind or a
replay of the compacted topic must not skip it. Its offset is a sound
version: every event of the key before it precedes the delete, and every
later one (the row inserted again) comes after it in the same partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from pipeline.aggregate.view import AggregateView
from pipeline.config import Config
from pipeline.errors import BadRecord, ConfigError
from pipeline.events import (
    ChangeEvent,
    Delete,
    Document,
    DocumentOp,
    Op,
    Upsert,
    doc_id,
    table_version,
)
from pipeline.viewconfig import AggregateViewConfig, TableViewConfig
from transforms.chain import build_chain
from transforms.expr import compile_expression

__all__ = [
    "RowFilter",
    "TableView",
    "Transform",
    "View",
    "build_views",
    "doc_id",
    "table_views",
]

RowFilter = Callable[[Document], bool]
Transform = Callable[[Document], Document | None]


@dataclass
class TableView:
    """Turns change events of one table into document ops of one view."""

    name: str
    cfg: TableViewConfig
    epoch: int
    row_filter: RowFilter | None
    transform: Transform | None
    #: (topic, partition) -> first offset of ``epoch`` (none: every offset)
    starts: dict[tuple[str, int], int] = field(default_factory=dict)

    def shape(self, row: Document) -> Document:
        if self.cfg.fields is not None:
            row = {k: row[k] for k in self.cfg.fields if k in row}
        if self.cfg.exclude:
            row = {k: v for k, v in row.items() if k not in self.cfg.exclude}
        return row

    def ops_for(self, event: ChangeEvent) -> list[DocumentOp]:
        """Document ops for one event; raises :class:`BadRecord` for a bad one."""
        pos = event.position
        if pos.offset < self.starts.get((pos.topic, pos.partition), 0):
            return []  # an older epoch's event (pipeline.layout)
        if event.op is Op.TRUNCATE:
            # readside's connector skips truncate events and its trigger turns
            # a TRUNCATE into row deletes (connectors/truncate.py); a truncate
            # event here comes from another setup and would empty nothing.
            raise BadRecord(
                "contract",
                f"truncate event of {event.table}: a table view needs the "
                "rows' deletes (install the trigger with `connector apply`)",
            )
        version = table_version(self.epoch, event.position.offset)
        lsn, ts, pos = event.lsn, event.commit_ts_ms, event.position
        if event.op in (Op.DELETE, Op.TOMBSTONE):
            return [Delete(self.name, doc_id(event.key), version, lsn, ts, pos)]
        if event.after is None:
            raise BadRecord("contract", f"{event.op.value} event without 'after' image")
        ident = doc_id(event.key)
        row = self.shape(event.after)
        if self.row_filter is not None and not self.row_filter(row):
            return [Delete(self.name, ident, version, lsn, ts, pos)]
        doc = self.transform(row) if self.transform is not None else row
        if doc is None:
            return [Delete(self.name, ident, version, lsn, ts, pos)]
        return [Upsert(self.name, ident, version, doc, lsn, ts, pos)]


View: TypeAlias = TableView | AggregateView


def build_views(
    cfg: Config,
    epochs: Mapping[str, int] | None = None,
    only: Iterable[str] | None = None,
    starts: Mapping[str, dict[tuple[str, int], int]] | None = None,
) -> dict[str, View]:
    """Compile every view of the config (filters and transform chains).

    ``epochs`` and ``starts`` (by view) are those recorded with the topic
    layouts (:func:`pipeline.layout.load`); by default epoch 0 from offset 0.

    Aggregate views come back unprepared: see
    :func:`pipeline.aggregate.prepare_views`.
    """
    epochs = epochs or {}
    defined = cfg.effective_views()
    wanted = set(only) if only else set(defined)
    unknown = wanted - set(defined)
    if unknown:
        raise ConfigError(f"unknown view(s): {', '.join(sorted(unknown))}")
    views: dict[str, View] = {}
    for name in sorted(wanted):
        vcfg = defined[name]
        chain = build_chain(list(vcfg.transforms)) if vcfg.transforms else None
        epoch = epochs.get(name, 0)
        if isinstance(vcfg, AggregateViewConfig):
            views[name] = AggregateView(name, vcfg, epoch, chain)
            continue
        row_filter: RowFilter | None = None
        if vcfg.filter:
            expr = compile_expression(vcfg.filter)
            row_filter = _as_predicate(expr.evaluate)
        first = dict((starts or {}).get(name, {}))
        views[name] = TableView(name, vcfg, epoch, row_filter, chain, first)
    return views


def table_views(views: dict[str, View]) -> dict[str, TableView]:
    return {n: v for n, v in views.items() if isinstance(v, TableView)}


def _as_predicate(evaluate: Callable[[Document], Any]) -> RowFilter:
    def predicate(row: Document) -> bool:
        return bool(evaluate(row))

    return predicate
