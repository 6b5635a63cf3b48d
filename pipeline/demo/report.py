"""What the demo prints: documents side by side, counts, and differences.

Aggregate documents nest too much for a table of fields; they are shown by
:func:`pipeline.demo.aggregate.show_sample`.

Stores are read through the sinks (``fetch``, ``ids``), and counted with one
cheap native query each while the progress bar runs.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import elasticsearch
from rich.console import Console
from rich.table import Table

from connectors.base import Sink
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.mongodb.sink import MongoSink
from connectors.redis.sink import RedisSink
from pipeline.aggregate import AggregateView
from pipeline.config import Config
from pipeline.demo.aggregate import show_sample
from pipeline.demo.data import Samples
from pipeline.views import TableView, View

logger = logging.getLogger(__name__)

_LIVE = {"bool": {"must_not": {"term": {"_deleted": True}}}}


def live_count(sink: Sink, view: str) -> int:
    """Live (not deleted) documents of ``view`` in ``sink``, counted natively."""
    if isinstance(sink, RedisSink):
        return sink.count(view)
    if isinstance(sink, ElasticsearchSink):
        try:
            return int(sink.client.count(index=sink.alias(view), query=_LIVE)["count"])
        except (elasticsearch.ApiError, elasticsearch.TransportError):
            return 0  # not created or not searchable yet
    if isinstance(sink, MongoSink):
        return sink.collection(view).count_documents({"_deleted": {"$ne": True}})
    return len(sink.ids(view))


@dataclass
class Diff:
    """How one view in one sink differs from what the source defines."""

    sink: str
    view: str
    expected: int
    held: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.extra or self.different)


def compare(name: str, sink: Sink, view: str, expected: Mapping[str, Any]) -> Diff:
    """Compare every live document of ``view`` in ``sink`` with ``expected``."""
    held = sink.ids(view)
    stored = sink.fetch(view, sorted(held & set(expected)))
    diff = Diff(name, view, len(expected), len(held))
    diff.missing = sorted(set(expected) - held)
    diff.extra = sorted(held - set(expected))
    diff.different = sorted(i for i, s in stored.items() if s.doc != expected[i])
    return diff


def _cell(value: Any, width: int = 34) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def sample_table(
    cfg: Config,
    sinks: Mapping[str, Sink],
    view: TableView,
    ident: str,
    expected: Mapping[str, Any] | None,
) -> Table:
    """One document as the source defines it and as each store holds it."""
    table = Table(title=f"{view.name} {ident}", title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("PostgreSQL (view)")
    bodies: list[dict[str, Any] | None] = []
    for name in view.cfg.sinks:
        got = sinks[name].fetch(view.name, [ident]).get(ident)
        version = "-" if got is None else str(got.version)
        table.add_column(f"{cfg.sinks[name].type} ({name}) v{version}")
        bodies.append(None if got is None else got.doc)
    fields = list(expected or {})
    for body in bodies:
        fields += [k for k in body or {} if k not in fields]
    for key in fields:
        cells = [_cell((expected or {}).get(key, "—"))]
        for body in bodies:
            value = "(absent)" if body is None else body.get(key, "—")
            style = "" if expected and value == expected.get(key) else "[red]"
            cells.append(style + _cell(value))
        table.add_row(key, *cells)
    return table


def counts_table(cfg: Config, views: Mapping[str, View], diffs: list[Diff]) -> Table:
    sink_names = list(dict.fromkeys(d.sink for d in diffs))
    table = Table(title="documents per store vs the source", title_justify="left")
    table.add_column("view")
    table.add_column("source documents", justify="right")
    for name in sink_names:
        table.add_column(f"{cfg.sinks[name].type} ({name})", justify="right")
    table.add_column("match")
    for view in views:
        mine = {d.sink: d for d in diffs if d.view == view}
        any_diff = next(iter(mine.values()))
        cells = [f"{mine[n].held:,}" if n in mine else "—" for n in sink_names]
        ok = all(d.ok for d in mine.values())
        table.add_row(
            view, f"{any_diff.expected:,}", *cells, "[green]yes" if ok else "[red]NO"
        )
    return table


def show(
    out: Console,
    cfg: Config,
    sinks: Mapping[str, Sink],
    views: Mapping[str, View],
    expected: Mapping[str, Mapping[str, Any]],
    diffs: list[Diff],
    samples: Samples,
) -> None:
    """Print sample documents, the cancelled order, counts and differences."""
    by_table = {v.cfg.table: v for v in views.values() if isinstance(v, TableView)}
    for table, ident in samples.ids().items():
        view = by_table.get(table)
        if view is not None:
            out.print(
                sample_table(cfg, sinks, view, ident, expected[view.name].get(ident))
            )
    for agg in views.values():
        if isinstance(agg, AggregateView):
            ident = str(samples.customer_id)
            got = expected[agg.name].get(ident)
            show_sample(out, cfg, sinks, agg, ident, got)
    orders = by_table.get("public.orders")
    if orders is not None:
        gone = str(samples.cancelled_order_id)
        where = [
            f"{cfg.sinks[n].type}: "
            + (
                "absent"
                if sinks[n].fetch(orders.name, [gone]).get(gone) is None
                or sinks[n].fetch(orders.name, [gone])[gone].doc is None
                else "[red]STILL THERE[/]"
            )
            for n in orders.cfg.sinks
        ]
        out.print(
            f"order {gone} was cancelled, so it left the orders view: "
            + ", ".join(where)
        )
    out.print(counts_table(cfg, views, diffs))
    show_diffs(out, diffs)


def show_diffs(out: Console, diffs: list[Diff]) -> None:
    for d in diffs:
        if not d.ok:
            out.print(
                f"[red]{d.sink}/{d.view}[/]: missing {d.missing[:10]} "
                f"extra {d.extra[:10]} different {d.different[:10]}"
            )
