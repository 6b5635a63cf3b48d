"""The demo's aggregate view: a snapshot load and a ``--rebuild`` under live
changes, and one document shown as PostgreSQL defines it and as each store
holds it.

``readside snapshot VIEW`` runs in-process here (:class:`pipeline.snapshot.
Loader` with its :class:`~pipeline.snapshot.progress.ProgressBar`: a bar on
a terminal, plain progress lines on stderr otherwise) while the live changes
run in a thread. Each chunk carries its own snapshot's version, so a chunk
never overwrites a document the workers wrote from a newer snapshot, and the
stores still converge to the view's SQL once the workers drain.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from rich.console import Console

from connectors.base import Sink
from pipeline.aggregate import AggregateView
from pipeline.config import Config
from pipeline.snapshot import Loader, Options, SnapshotState
from pipeline.snapshot.progress import ProgressBar
from pipeline.snapshot.rebuild import Rebuild

logger = logging.getLogger(__name__)

#: Roots per chunk: small enough that the demo's few thousand roots show a bar.
CHUNK_SIZE = 100
#: Orders of the sample document printed in full.
SHOWN_ORDERS = 2

T = TypeVar("T")


def snapshot_during(
    out: Console, cfg: Config, view: str, changes: Callable[[], T]
) -> tuple[SnapshotState, T]:
    """Run ``readside snapshot VIEW``, then ``readside snapshot VIEW --rebuild``,
    while ``changes()`` runs in a thread.

    Prints their summary lines; returns the load's final state and what
    ``changes()`` returned.
    """
    opts = Options(view, chunk_size=CHUNK_SIZE, restart=True)
    with ThreadPoolExecutor(1, thread_name_prefix="demo-live") as pool:
        live = pool.submit(changes)
        with ProgressBar(view) as bar:
            state = Loader(cfg, opts, bar.update).run()
        out.print(bar.summary(state))
        # The same view built again beside the live one, then switched in.
        with ProgressBar(view) as bar:
            rebuilt = Rebuild(cfg, opts, bar.update).run()
        out.print(bar.summary(rebuilt))
        return state, live.result()


def _trimmed(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The document with only its first orders (and a note of the rest)."""
    out = dict(doc)
    orders = out.get("orders")
    if isinstance(orders, list) and len(orders) > SHOWN_ORDERS:
        out["orders"] = [*orders[:SHOWN_ORDERS], f"… {len(orders) - SHOWN_ORDERS} more"]
    return out


def show_sample(
    out: Console,
    cfg: Config,
    sinks: Mapping[str, Sink],
    view: AggregateView,
    ident: str,
    expected: Mapping[str, Any] | None,
) -> None:
    """One aggregate document from the view's SQL, and how each store holds it."""
    if expected is None:
        out.print(f"{view.name} {ident}: not in the view")
        return
    orders = expected.get("orders") or []
    lines = sum(len(o.get("items") or []) for o in orders)
    out.print(
        f"[bold]{view.name} {ident}[/] (aggregate view: customer, "
        f"{len(orders)} orders, {lines} order lines with their product):"
    )
    out.print_json(json.dumps(_trimmed(expected), ensure_ascii=False))
    for name in view.cfg.sinks:
        got = sinks[name].fetch(view.name, [ident]).get(ident)
        where = f"{cfg.sinks[name].type} ({name})"
        if got is None or got.doc is None:
            out.print(f"  {where}: [red]absent[/]")
        elif got.doc == expected:
            out.print(f"  {where}: the same document, version {got.version}")
        else:
            out.print(f"  {where}: [red]differs[/] (version {got.version})")
