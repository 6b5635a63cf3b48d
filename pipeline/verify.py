"""The convergence oracle: does each sink hold exactly what the source says?

Each view says which documents the source defines now
(:meth:`pipeline.views.View.source_documents`): a table view from its table
alone, run through the view as the worker runs it
(:func:`~pipeline.views.table_documents`), an aggregate view from its SQL
definition in one snapshot. Each sink is then compared with that: ids it
lacks (missing), live ids it should not hold (extra), and documents whose
JSON differs (differing).

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

from connectors.base import Sink
from pipeline.aggregate import prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.events import UNCHANGED, Document
from pipeline.types import PLACEHOLDER
from pipeline.views import View, build_views
from pipeline.views import table_documents as expected_documents
from pipeline.worker import build_sinks

__all__ = [
    "DocDiff",
    "Drift",
    "canonical",
    "compare",
    "expected_documents",
    "verify",
    "view_documents",
]

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
        duplicates: ids that more than one source row gives (a view whose
            ``id`` names columns that are not unique), with why.
    """

    view: str
    sink: str
    expected: int = 0
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)
    samples: list[DocDiff] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when the sink holds exactly the expected documents, each
        from one source row."""
        return not (self.missing or self.extra or self.differing or self.duplicates)

    def describe(self) -> str:
        """A few lines for an operator or a failing test."""
        head = (
            f"view={self.view} sink={self.sink} expected={self.expected} "
            f"missing={len(self.missing)} extra={len(self.extra)} "
            f"differing={len(self.differing)}"
        )
        if self.duplicates:
            head += f" duplicate_ids={len(self.duplicates)}"
        lines = [head]
        for reason in list(self.duplicates.values())[:SAMPLE_SIZE]:
            lines.append(f"  duplicate id: {reason}")
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


def view_documents(
    conn: psycopg.Connection[Any], reader: Reader, view: View
) -> dict[str, Document]:
    """Documents of either kind of view as the source defines them now.

    Aggregate views must be prepared (:func:`pipeline.aggregate.prepare_views`).
    """
    return view.source_documents(conn, reader)


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
    drift.duplicates = dict(getattr(expected, "duplicates", {}))
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
