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
import time
from collections.abc import Callable, Mapping
from typing import Any

import psycopg
from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    NewTopic,
)
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from connectors import debezium
from connectors.base import Sink
from pipeline import config as config_mod
from pipeline import status as status_mod
from pipeline.config import Config
from pipeline.demo import data, report, workers
from pipeline.errors import FatalError
from pipeline.views import TableView, build_views, table_views
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
    console: Console | None = None,
) -> int:
    """Run the whole demo; returns the process exit code (0: stores match)."""
    out = console or Console()
    logging.getLogger("elastic_transport").setLevel(logging.ERROR)
    cfg = config_mod.load(config_path)
    views = table_views(build_views(cfg))
    sinks = build_sinks(cfg, sorted({s for v in views.values() for s in v.cfg.sinks}))
    sizes, samples = data.Sizes(), data.Samples()
    started = time.monotonic()
    workers.stop_kept(out)
    with out.status("resetting the connector, database, topics and stores"):
        existed = stop_connector(cfg)
        rows = rebuild_database(cfg, seed, sizes)
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
    try:
        with out.status("starting the connector (initial snapshot)"):
            start_connector(cfg, existed)
        expected = data.expected_documents(cfg.source.dsn.get_secret_value(), views)
        wait_snapshot(out, cfg, sinks, views, expected, procs)
        out.print(
            f"initial snapshot in every store after "
            f"{time.monotonic() - started:.1f}s; changing rows for "
            f"{live_seconds:.0f}s"
        )
        live = data.change_live(
            cfg.source.dsn.get_secret_value(), seed, sizes, samples, live_seconds
        )
        out.print(
            f"live: {live.transactions} transactions, {live.inserts} inserts, "
            f"{live.updates} updates, {live.deletes} deletes"
        )
        expected, diffs = wait_drained(out, cfg, sinks, views, procs)
        report.show(out, cfg, sinks, views, expected, diffs, samples)
        out.print(status_mod.render(status_mod.collect(cfg)))
        code = 0 if all(d.ok for d in diffs) else 1
        out.print(
            f"demo finished in {time.monotonic() - started:.1f}s: "
            + (
                "[green]every store matches the source[/]"
                if code == 0
                else "[red]stores differ from the source[/]"
            )
        )
    finally:
        for sink in sinks.values():
            sink.close()
        if keep_running and code == 0:
            workers.keep(procs)
            out.print(
                "workers keep running; stop them with kill -TERM "
                + " ".join(str(p.pid) for p in procs)
            )
        elif not workers.stop(out, procs, cfg.worker.shutdown_timeout_s + 10):
            code = code or 1
    return code


# ------------------------------------------------------------------ reset
def stop_connector(cfg: Config) -> bool:
    """Stop the connector and reset its offsets; False when it does not exist."""
    client = debezium.ConnectClient(cfg.connect.url)
    base = f"/connectors/{cfg.connect.connector}"
    if client.request("GET", base) is None:
        return False
    client.request("PUT", f"{base}/stop")
    _until(
        lambda: _connector_state(client, base) == "STOPPED",
        60.0,
        "connector did not stop",
    )
    client.request("DELETE", f"{base}/offsets")
    return True


def _connector_state(client: debezium.ConnectClient, base: str) -> str | None:
    st = client.request("GET", f"{base}/status")
    return None if st is None else str(st["connector"]["state"])


def _until(check: Callable[[], bool], timeout_s: float, failure: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise FatalError(f"{failure} within {timeout_s:.0f}s")
        time.sleep(0.3)


def rebuild_database(cfg: Config, seed: int, sizes: data.Sizes) -> dict[str, int]:
    """Drop the database (and its inactive slots), recreate it and load it."""
    dsn = cfg.source.dsn.get_secret_value()
    dbname = str(conninfo_to_dict(dsn).get("dbname") or "postgres")
    admin_dsn = make_conninfo(dsn, dbname="postgres")
    with psycopg.connect(admin_dsn, autocommit=True) as conn:

        def slots_idle() -> bool:
            got = conn.execute(
                "SELECT count(*) FROM pg_replication_slots "
                "WHERE database = %s AND active",
                (dbname,),
            ).fetchone()
            return got is not None and got[0] == 0

        _until(slots_idle, 30.0, f"replication slots of {dbname} still in use")
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) "
            "FROM pg_replication_slots WHERE database = %s",
            (dbname,),
        )
        name = sql.Identifier(dbname)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with psycopg.connect(dsn) as conn:
        data.create_schema(conn)
        return data.load(conn, seed, sizes)


def pipeline_topics(cfg: Config) -> list[str]:
    src = cfg.source
    tables = [*src.tables, src.heartbeat_table, src.signal_table]
    return [
        *(src.topic(t) for t in tables),
        f"__debezium-heartbeat.{src.topic_prefix}",
        cfg.kafka.dlq_topic,
        cfg.kafka.checkpoint_topic,
    ]


def reset_kafka(cfg: Config) -> None:
    """Delete the consumer group and every topic of the pipeline."""
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    for fut in admin.delete_consumer_groups([cfg.kafka.group_id]).values():
        try:
            fut.result()
        except KafkaException as exc:
            if exc.args[0].name() == "GROUP_ID_NOT_FOUND":
                continue
            raise FatalError(
                f"cannot delete consumer group {cfg.kafka.group_id} "
                f"(are other workers running?): {exc}"
            ) from exc
    names = set(pipeline_topics(cfg))
    doomed = sorted(names & set(admin.list_topics(timeout=10).topics))
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            fut.result()
    _until(
        lambda: not names & set(admin.list_topics(timeout=10).topics),
        60.0,
        "topics were not deleted",
    )


def create_topics(cfg: Config) -> None:
    """Create the topics the workers read, as the connector would create them.

    Done before the connector starts, so that workers can subscribe at once.
    """
    settings = debezium.connector_config(cfg)
    prefix = "topic.creation.default."
    topic_cfg = {
        k.removeprefix(prefix): v for k, v in settings.items() if k.startswith(prefix)
    }
    parts = int(topic_cfg.pop("partitions"))
    replication = int(topic_cfg.pop("replication.factor"))
    src = cfg.source
    names = [src.topic(t) for t in [*src.tables, src.heartbeat_table]]
    admin = AdminClient({"bootstrap.servers": cfg.kafka.bootstrap_servers})
    deadline = time.monotonic() + 30
    while names:
        new = [
            NewTopic(
                n,
                num_partitions=parts,
                replication_factor=replication,
                config=topic_cfg,
            )
            for n in names
        ]
        failed = []
        for name, fut in admin.create_topics(new).items():
            try:
                fut.result()
            except KafkaException as exc:
                if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                    if time.monotonic() > deadline:
                        raise
                    failed.append(name)  # still being deleted: try again
        names = failed
        if names:
            time.sleep(0.5)


def start_connector(cfg: Config, existed: bool) -> None:
    """Register (stopped, with no offsets) or update the connector, then run it."""
    client = debezium.ConnectClient(cfg.connect.url)
    base = f"/connectors/{cfg.connect.connector}"
    if not existed:
        # A connector of this name deleted earlier may have left offsets.
        client.request(
            "POST",
            "/connectors",
            {
                "name": cfg.connect.connector,
                "config": debezium.connector_config(cfg),
                "initial_state": "STOPPED",
            },
        )
        client.request("DELETE", f"{base}/offsets")
    debezium.apply(cfg)
    client.request("PUT", f"{base}/resume")
    debezium.wait_running(cfg)


# --------------------------------------------------------------- progress
def wait_snapshot(
    out: Console,
    cfg: Config,
    sinks: Mapping[str, Sink],
    views: Mapping[str, TableView],
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
    views: Mapping[str, TableView],
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
