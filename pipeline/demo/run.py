"""Run the demo: reset, snapshot, live changes, and the read models side by side.

The demo owns what the demo config names and rebuilds it on every run, so it
works from scratch and when re-run: the connector is stopped and its offsets
reset (Kafka Connect's ``/stop`` and ``DELETE /offsets``, so Debezium takes a
new initial snapshot), the replication slots of the database are dropped, the
database is recreated from ``shop.sql`` and loaded, the pipeline's topics and
consumer group are deleted and the views' targets dropped in every store.
Workers left running by ``--keep-running`` are stopped first.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from connectors.base import Sink
from pipeline import config as config_mod
from pipeline import status as status_mod
from pipeline.aggregate import AggregateView, prepare_views
from pipeline.config import Config
from pipeline.demo import aggregate, data, live, report, serve, workers
from pipeline.demo.reset import (
    create_topics,
    rebuild_database,
    reset_kafka,
    start_connector,
    stop_connector,
)
from pipeline.errors import FatalError
from pipeline.views import View, build_views
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

SNAPSHOT_TIMEOUT_S = 120.0
DRAIN_TIMEOUT_S = 60.0


def run(
    config_path: str | None,
    *,
    seed: int = 42,
    worker_count: int = 2,
    live_seconds: float = 5.0,
    keep_running: bool = False,
    serve_api: bool = True,
    console: Console | None = None,
) -> int:
    """Run the whole demo; returns the process exit code (0: stores match)."""
    out = console or Console()
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    cfg = config_mod.load(config_path)
    dsn = cfg.source.dsn.get_secret_value()
    views = build_views(cfg)
    sinks = build_sinks(cfg, sorted({s for v in views.values() for s in v.cfg.sinks}))
    sizes, samples = data.Sizes(), data.Samples()
    started = time.monotonic()
    workers.stop_kept(out)
    with out.status("resetting the connector, database, topics and stores"):
        existed = stop_connector(cfg)
        rows = rebuild_database(cfg, seed, sizes)
        prepare_views(views, dsn)
        reset_kafka(cfg)
        for name, sink in sinks.items():
            for view in views:
                if name in views[view].cfg.sinks:
                    getattr(sink, "drop", lambda _v: None)(view)
        create_topics(cfg)
    loaded = ", ".join(f"{n:,} {t}" for t, n in rows.items())
    out.print(f"[bold]shop[/] recreated: {loaded} (seed {seed})")
    procs = workers.start(config_path, worker_count)
    out.print(
        f"started {worker_count} workers: pids "
        f"{', '.join(str(p.pid) for p in procs)} (logs in {workers.STATE_DIR})"
    )
    code = 1
    server: subprocess.Popen[bytes] | None = None
    try:
        with out.status("starting the connector (initial snapshot)"):
            start_connector(cfg, existed)
        expected = data.expected_documents(dsn, views)
        wait_snapshot(out, cfg, sinks, views, expected, procs)
        expected, diffs = wait_drained(out, cfg, sinks, views, procs)
        first_ok = all(d.ok for d in diffs)
        out.print(
            f"initial snapshot in every store after "
            f"{time.monotonic() - started:.1f}s: "
            + (
                f"{sum(d.held for d in diffs):,} documents in "
                f"{len(diffs)} (view, store) pairs, each equal to the source"
                if first_ok
                else "[red]stores differ from the source[/]"
            )
        )
        report.show_diffs(out, diffs)
        stats = change(
            out,
            cfg,
            views,
            lambda: live.change_live(dsn, seed, sizes, samples, live_seconds),
            live_seconds,
        )
        out.print(
            f"live: {stats.transactions} transactions, {stats.inserts} inserts, "
            f"{stats.updates} updates, {stats.deletes} deletes"
        )
        expected, diffs = wait_drained(out, cfg, sinks, views, procs)
        report.show(out, cfg, sinks, views, expected, diffs, samples)
        out.print(status_mod.render(status_mod.collect(cfg)))
        code = 0 if first_ok and all(d.ok for d in diffs) else 1
        out.print(
            f"demo finished in {time.monotonic() - started:.1f}s: "
            + (
                "[green]every store matches the source[/]"
                if code == 0
                else "[red]stores differ from the source[/]"
            )
        )
        if serve_api:
            server = serve.start(config_path, cfg)
            example = "customer_orders" if "customer_orders" in views else "customers"
            serve.show_addresses(out, cfg, (example, str(samples.customer_id)))
            trip = serve.read_your_writes(cfg, example, samples.customer_id)
            serve.show_round_trip(out, trip)
            code = code or (0 if trip.seen else 1)
    finally:
        for sink in sinks.values():
            sink.close()
        kept = [*procs, *([server] if server is not None else [])]
        if keep_running and code == 0:
            workers.keep(kept)
            out.print(
                (
                    "workers and the API keep running"
                    if server
                    else "workers keep running"
                )
                + "; stop them with kill -TERM "
                + " ".join(str(p.pid) for p in kept)
            )
        else:
            if server is not None:
                clean = serve.stop(server)
                out.print(
                    "readside serve stopped" + ("" if clean else " [red]uncleanly")
                )
            if not workers.stop(out, procs, cfg.worker.shutdown_timeout_s + 10):
                code = code or 1
    return code


def change(
    out: Console,
    cfg: Config,
    views: Mapping[str, View],
    changes: Callable[[], live.LiveStats],
    seconds: float,
) -> live.LiveStats:
    """The live changes; with a snapshot load of each aggregate view beside them."""
    loads = [n for n, v in views.items() if isinstance(v, AggregateView)]
    out.print(
        f"changing rows for {seconds:.0f}s"
        + (
            f" while `readside snapshot {loads[0]}` reloads it, then "
            "`--rebuild` builds it again beside the live one"
            if loads
            else ""
        )
    )
    if not loads:
        return changes()
    _state, stats = aggregate.snapshot_during(out, cfg, loads[0], changes)
    return stats


# --------------------------------------------------------------- progress
def wait_snapshot(
    out: Console,
    cfg: Config,
    sinks: Mapping[str, Sink],
    views: Mapping[str, View],
    expected: Mapping[str, Mapping[str, Any]],
    procs: workers.Procs,
) -> None:
    """A progress bar per store until each holds the initial snapshot."""
    totals = {
        name: sum(len(expected[v]) for v in views if name in views[v].cfg.sinks)
        for name in sinks
    }
    columns = (
        TextColumn("{task.description:<28}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
    )
    start = time.monotonic()
    with Progress(*columns, console=out) as bar:
        tasks = {
            name: bar.add_task(
                f"{cfg.sinks[name].type} ({name})", total=totals[name], rate=""
            )
            for name in sinks
        }
        while True:
            workers.check_alive(procs)
            done = 0
            for name, sink in sinks.items():
                have = sum(
                    report.live_count(sink, v)
                    for v in views
                    if name in views[v].cfg.sinks
                )
                rate = have / max(time.monotonic() - start, 1e-3)
                bar.update(tasks[name], completed=have, rate=f"{rate:,.0f} docs/s")
                done += have >= totals[name]
            if done == len(sinks):
                return
            if time.monotonic() - start > SNAPSHOT_TIMEOUT_S:
                raise FatalError(
                    "the initial snapshot did not reach every store "
                    f"within {SNAPSHOT_TIMEOUT_S:.0f}s"
                )
            time.sleep(0.5)


def wait_drained(
    out: Console,
    cfg: Config,
    sinks: Mapping[str, Sink],
    views: Mapping[str, View],
    procs: workers.Procs,
) -> tuple[dict[str, dict[str, Any]], list[report.Diff]]:
    """Until every store holds exactly the documents the source defines."""
    dsn = cfg.source.dsn.get_secret_value()
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    with out.status("waiting until every store caught up"):
        while True:
            workers.check_alive(procs)
            expected = data.expected_documents(dsn, views)
            cheap = all(
                report.live_count(sinks[s], v) == len(expected[v])
                for v in views
                for s in views[v].cfg.sinks
            )
            if cheap or time.monotonic() > deadline:
                diffs = [
                    report.compare(s, sinks[s], v, expected[v])
                    for v in views
                    for s in views[v].cfg.sinks
                ]
                if all(d.ok for d in diffs) or time.monotonic() > deadline:
                    return expected, diffs
            time.sleep(1.0)
