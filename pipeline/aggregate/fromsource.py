"""An aggregate view read straight from the source, without a change to
start from (:class:`pipeline.views.SourceRead`): every document (the oracle),
every id, the re-read of given ids (``verify --repair``, a focus's purge), a
count and the chunks of a snapshot load in key order, one snapshot each.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from pipeline.aggregate.documents import Converter
from pipeline.aggregate.ids import IdRule
from pipeline.aggregate.pending import Pending
from pipeline.aggregate.plan import ViewSQL
from pipeline.aggregate.reader import Reader, key_text
from pipeline.aggregate.roots import key_of
from pipeline.aggregate.tree import Node
from pipeline.errors import BadRecord
from pipeline.events import Delete, DocumentOp, SourceDocuments, Upsert
from pipeline.types import pg_value_to_json


class AggregateView(Protocol):
    """What these reads ask of :class:`pipeline.aggregate.view.AggregateView`."""

    name: str
    epoch: int

    def tree(self) -> Node: ...

    def tables(self) -> list[str]: ...

    def id_rule(self) -> IdRule: ...

    def view_sql(self) -> ViewSQL: ...

    def converter(self, reader: Reader) -> Converter: ...

    def reread(self, reader: Reader, pending: Pending) -> list[DocumentOp]: ...

    def ops_from_rows(
        self,
        converter: Converter,
        rows: list[Any],
        asked: Any,
        version: int,
        meta: Pending,
    ) -> list[DocumentOp]: ...


@dataclass
class Chunk:
    """One chunk of a snapshot load (:meth:`AggregateView.load_chunk`)."""

    ops: list[DocumentOp]
    rows: int
    #: key texts of its last root: the next chunk starts after it
    last: list[str]
    #: roots whose document a transform refused: (doc id, error)
    failures: list[tuple[str, BadRecord]]


def documents(view: AggregateView, reader: Reader) -> SourceDocuments:
    """Every document the view's SQL defines now (one snapshot), with the
    ids two roots share."""
    with reader.read(tables=view.tables()):
        rows = reader.query(view.view_sql().definition(), {}, documents=True)
        converter = view.converter(reader)
    meta = Pending()
    ops = view.ops_from_rows(converter, rows, None, 0, meta)
    out = SourceDocuments((o.doc_id, o.doc) for o in ops if isinstance(o, Upsert))
    out.duplicates.update(
        (i, str(e)) for i, e in meta.failures if e.reason == "duplicate_id"
    )
    return out


def ids(view: AggregateView, reader: Reader) -> set[str]:
    rule = view.id_rule()
    with reader.read(tables=view.tables()):
        rows = reader.query(view.view_sql().keys(), {})
    return {rule.ident_of([pg_value_to_json(v) for v in r]) for r in rows}


def reread_ids(
    view: AggregateView, reader: Reader, ids: Iterable[str]
) -> list[DocumentOp]:
    rule = view.id_rule()
    if not rule.custom:
        named = {key_of(i, len(rule.key)) for i in ids}
        return view.reread(reader, Pending(root_keys=named))
    wanted = set(ids)  # by id: the roots holding them, or deletes
    with reader.read(tables=view.tables()) as snap:
        sql_ = view.view_sql()
        keys = sorted(key_of(i, len(rule.columns)) for i in wanted)
        rows = reader.rows_by_keys(sql_, keys) if keys else []
        converter = view.converter(reader)
    version = snap.version(view.epoch)
    ops = view.ops_from_rows(converter, rows, None, version, Pending())
    gone = wanted - {op.doc_id for op in ops}
    return ops + [Delete(view.name, i, version) for i in sorted(gone)]


def count(
    view: AggregateView, reader: Reader, where: str | None, after: Any = None
) -> int:
    params = {} if after is None else {f"a{i}": v for i, v in enumerate(after)}
    with reader.read(tables=view.tables()):
        statement = view.view_sql().count(where, after is None)
        rows = reader.query(statement, params)
    return int(rows[0][0])


def load_chunk(
    view: AggregateView,
    reader: Reader,
    after: list[str] | None,
    where: str | None,
    size: int,
) -> Chunk | None:
    params = {"limit": size, **{f"a{i}": v for i, v in enumerate(after or ())}}
    with reader.read(tables=view.tables()) as snap:
        statement = view.view_sql().chunk(after is None, where)
        rows = reader.query(statement, params, documents=True)
        converter = view.converter(reader)
    if not rows:
        return None
    meta = Pending()
    ops = view.ops_from_rows(converter, rows, None, snap.version(view.epoch), meta)
    last = rows[-1][: len(view.tree().table.primary_key)]
    keys = [key_text(pg_value_to_json(v)) for v in last]
    return Chunk(ops, len(rows), keys, meta.failures)
