"""The convergence oracle: does each sink hold exactly what the source says?

For a table view the expected documents follow from the source table alone:
every row is read with psycopg (``SELECT * FROM table``), mapped with
:func:`~pipeline.types.pg_row_to_json` (the mapping decoded Debezium events
give), keyed with :func:`~pipeline.views.doc_id` and run through the view as
the worker runs it (shape, focus filter, transform chain). Each sink is then
compared with that: ids it lacks (missing), live ids it should not hold
(extra), and documents whose JSON differs (differing).

Run it when the pipeline is drained (no change in flight), e.g. from
``readside verify VIEW`` or the integration tests; on a live pipeline it
reports the changes still in flight as drift.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from connectors.base import Sink
from pipeline.aggregate import AggregateView, catalog, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.events import UNCHANGED, Document
from pipeline.types import PLACEHOLDER, pg_row_to_json
from pipeline.views import TableView, View, build_views, doc_id
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

#: Documents fetched from a sink per request.
FETCH_CHUNK = 500
#: Differing documents described in a report (the count is always complete).
SAMPLE_SIZE = 5


@dataclass(frozen=True)
class DocDiff:
    """One differing document: the expected and the stored JSON text."""

    doc_id: str
    expected: str
    stored: str


@dataclass
class Drift:
    """How one sink's copy of one view differs from the source.

    Attributes:
        view: the view's name.
        sink: the sink's name.
        expected: how many documents the source defines.
        missing: ids the source defines that the sink lacks (sorted).
        extra: live ids the sink holds that the source does not define.
        differing: ids held with a body unlike the expected one.
        samples: up to :data:`SAMPLE_SIZE` of the differing documents.
    """

    view: str
    sink: str
    expected: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    samples: list[DocDiff] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the sink holds exactly the expected documents."""
        return not (self.missing or self.extra or self.differing)

    def describe(self) -> str:
        """A few lines for an operator or a failing test."""
        head = (
            f"view={self.view} sink={self.sink} expected={self.expected} "
            f"missing={len(self.missing)} extra={len(self.extra)} "
            f"differing={len(self.differing)}"
        )
        lines = [head]
        if self.missing:
            lines.append(f"  missing (first): {self.missing[:SAMPLE_SIZE]}")
        if self.extra:
            lines.append(f"  extra (first): {self.extra[:SAMPLE_SIZE]}")
        for d in self.samples:
            lines.append(f"  {d.doc_id}: expected {d.expected[:400]}")
            lines.append(f"  {' ' * len(d.doc_id)}  stored   {d.stored[:400]}")
        return "\n".join(lines)


def canonical(doc: Document) -> str:
    """The JSON text two equal documents share (sorted keys, compact).

    Raises:
        ValueError: the document holds the unchanged marker or Debezium's
            unavailable-value placeholder, which must never reach a store.
    """
    _check_clean(doc, "")
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_clean(value: Any, path: str) -> None:
    if value is UNCHANGED or value == PLACEHOLDER:
        raise ValueError(f"{path or '<doc>'} holds an unavailable-value placeholder")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_clean(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_clean(v, f"{path}[{i}]")


def primary_key(conn: psycopg.Connection[Any], table: str) -> list[str]:
    """The primary-key columns of ``schema.table``, in key order."""
    keys = catalog.primary_key(conn, table)
    if not keys:
        raise ValueError(f"table {table} has no primary key")
    return keys


_BIT_OID = 1560


def _register_hstore(conn: psycopg.Connection[Any]) -> None:
    """Read hstore columns as dicts (Debezium's mapping), when installed."""
    from psycopg.types import TypeInfo
    from psycopg.types.hstore import register_hstore

    info = TypeInfo.fetch(conn, "hstore")
    if info is not None:
        register_hstore(info, conn)


def expected_documents(
    conn: psycopg.Connection[Any], view: TableView
) -> dict[str, Document]:
    """Documents of a table view as the source defines them now.

    Raises:
        pipeline.errors.BadRecord: a row breaks the view's contract (a
            transform raised); the worker would have dead-lettered it.
    """
    table = view.cfg.table
    keys = primary_key(conn, table)
    schema, name = table.split(".", 1)
    query = sql.SQL("SELECT * FROM {}").format(sql.Identifier(schema, name))
    out: dict[str, Document] = {}
    _register_hstore(conn)
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query)
        # bit(1) is a boolean in Debezium's mapping; psycopg reads it as text.
        bits = [d.name for d in cur.description or () if d.type_code == _BIT_OID]
        for raw in cur:
            for col in bits:
                if raw[col] is not None and len(raw[col]) == 1:
                    raw[col] = raw[col] == "1"
            row = pg_row_to_json(raw)
            ident = doc_id({k: row[k] for k in keys})
            shaped = view.shape(row)
            if view.row_filter is not None and not view.row_filter(shaped):
                continue
            doc = view.transform(shaped) if view.transform is not None else shaped
            if doc is not None:
                out[ident] = doc
    return out


def view_documents(
    conn: psycopg.Connection[Any], reader: Reader, view: View
) -> dict[str, Document]:
    """Documents of either kind of view as the source defines them now.

    Aggregate views must be prepared (:func:`pipeline.aggregate.prepare_views`).
    """
    if isinstance(view, AggregateView):
        return view.documents(reader)
    return expected_documents(conn, view)


def compare(
    view: str,
    sink: Sink,
    expected: Mapping[str, Document],
    sample: int | None = None,
    rng: random.Random | None = None,
) -> Drift:
    """Compare one sink's copy of ``view`` with the expected documents.

    With ``sample``, only that many random expected ids are fetched and
    compared; extra ids are always looked for among all held ids.
    """
    drift = Drift(view, sink.name, expected=len(expected))
    held = sink.ids(view)
    drift.extra = sorted(held - set(expected))
    ids = sorted(expected)
    if sample is not None and sample < len(ids):
        pick = rng or random.Random()  # noqa: S311 (sampling, not secrets)
        ids = sorted(pick.sample(ids, sample))
    for start in range(0, len(ids), FETCH_CHUNK):
        chunk = ids[start : start + FETCH_CHUNK]
        stored = sink.fetch(view, chunk)
        for ident in chunk:
            have = stored.get(ident)
            if have is None or have.doc is None:
                drift.missing.append(ident)
                continue
            want = canonical(expected[ident])
            try:
                got = canonical(have.doc)
            except ValueError as exc:
                got = f"<{exc}>"
            if got != want:
                drift.differing.append(ident)
                if len(drift.samples) < SAMPLE_SIZE:
                    drift.samples.append(DocDiff(ident, want, got))
    return drift


def verify(
    cfg: Config,
    views: Iterable[str] | None = None,
    sinks: Mapping[str, Sink] | None = None,
    sample: int | None = None,
) -> list[Drift]:
    """Check every (view, sink) pair of the config, or of ``views``.

    Args:
        cfg: the pipeline's configuration.
        views: the views to check (default: all).
        sample: compare only this many random documents per view and sink.
        sinks: opened sinks by name to use (default: built from ``cfg``,
            opened and closed here).

    Returns:
        One :class:`Drift` per (view, sink), in view then sink order.
    """
    all_views = build_views(cfg, only=list(views) if views is not None else None)
    names: Sequence[str] = sorted({s for v in all_views.values() for s in v.cfg.sinks})
    own = sinks is None
    opened = build_sinks(cfg, names) if sinks is None else dict(sinks)
    reports: list[Drift] = []
    try:
        if own:
            for sink in opened.values():
                sink.open()
        dsn = cfg.source.dsn.get_secret_value()
        prepare_views(all_views, dsn, strict=False)
        reader = Reader(dsn)
        with psycopg.connect(dsn, autocommit=True) as conn, closing(reader):
            for name, view in all_views.items():
                expected = view_documents(conn, reader, view)
                for sink_name in view.cfg.sinks:
                    drift = compare(name, opened[sink_name], expected, sample)
                    logger.info(
                        "verify view=%s sink=%s ok=%s expected=%d",
                        name,
                        sink_name,
                        drift.ok,
                        drift.expected,
                    )
                    reports.append(drift)
    finally:
        if own:
            for sink in opened.values():
                sink.close()
    return reports
