"""The ``readside`` command line."""

from __future__ import annotations

import faulthandler
import json
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import psycopg

from pipeline import config as config_mod
from pipeline.errors import ReadsideError, Stopped

logger = logging.getLogger("readside")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("elastic_transport", "urllib3", "pymongo"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _Group(click.Group):
    """Turns readside's own errors into one clear line and exit code 2 (130
    for a stop asked while waiting for a store)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Stopped as exc:  # a signal while waiting for a store: no error
            click.echo(str(exc), err=True)
            sys.exit(130)
        except ReadsideError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option(
    "--config",
    "config_path",
    envvar=config_mod.CONFIG_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help="readside YAML config (default: $READSIDE_CONFIG or readside.yaml)",
)
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """readside: NoSQL read models kept in step with PostgreSQL."""
    _setup_logging(verbose)
    # `kill -USR1 <pid>` prints every thread's stack: where a command waits.
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    ctx.obj = {"config_path": config_path}


def load_config(ctx: click.Context) -> config_mod.Config:
    return config_mod.load(ctx.obj["config_path"])


def stack_config(ctx: click.Context) -> config_mod.StackConfig:
    """The stack section of the config, or defaults when there is no file."""
    path = ctx.obj["config_path"] or os.environ.get(config_mod.CONFIG_ENV)
    if path is None and not Path("readside.yaml").exists():
        return config_mod.StackConfig()
    return config_mod.load_stack(path)


# --------------------------------------------------------------------- stack
@main.group()
def stack() -> None:
    """Run the local stack: PostgreSQL, Kafka, Connect+Debezium, Redis, ES, FerretDB."""


@stack.command("up")
@click.pass_context
def stack_up(ctx: click.Context) -> None:
    """Provision (cached) and start every service; a no-op when already up."""
    from pipeline.stack import runner

    started = runner.up(stack_config(ctx), progress=click.echo)
    click.echo("started: " + (", ".join(started) if started else "nothing (all up)"))


@stack.command("down")
@click.pass_context
def stack_down(ctx: click.Context) -> None:
    """Stop the services that ``stack up`` started."""
    from pipeline.stack import runner

    runner.down(stack_config(ctx), progress=click.echo)


@stack.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def stack_status(ctx: click.Context, as_json: bool) -> None:
    """Each service with its port, pid and a real health probe."""
    from pipeline.stack import runner

    rows = runner.status(stack_config(ctx))
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        for r in rows:
            state = "healthy" if r.healthy else (r.problem or "?")
            click.echo(f"{r.name:<17} port={r.port:<6} pid={r.pid or '-':<8} {state}")
    if not all(r.healthy for r in rows):
        sys.exit(1)


@stack.command("logs")
@click.argument("service")
@click.option("-n", "--lines", default=50)
@click.pass_context
def stack_logs(ctx: click.Context, service: str, lines: int) -> None:
    """Print the last lines of a service's log."""
    from pipeline.stack import runner

    path = runner.log_path(stack_config(ctx), service)
    if not path.exists():
        raise click.ClickException(f"no log for {service} at {path}")
    for line in path.read_text(errors="replace").splitlines()[-lines:]:
        click.echo(line)


# -------------------------------------------------------------------- config
@main.group("config")
def config_group() -> None:
    """Validate and explain a configuration file."""


@config_group.command("check")
@click.option(
    "--sql/--no-sql",
    default=True,
    help="also check the tables in the source's catalog and print each "
    "aggregate view's SQL (needs the source)",
)
@click.pass_context
def config_check(ctx: click.Context, sql: bool) -> None:
    """Validate the config and print the resolved plan and the views' SQL."""
    cfg = load_config(ctx)
    from connectors.postgres import table_problems, toast_risks
    from pipeline.plan import describe, view_sql

    if sql:
        try:
            dsn = cfg.source.dsn.get_secret_value()
            with psycopg.connect(dsn, connect_timeout=10) as conn:
                problems = table_problems(conn, list(cfg.source.tables))
                if not problems:
                    for warning in toast_risks(conn, cfg):
                        click.echo(f"warning: {warning}", err=True)
        except psycopg.OperationalError as exc:
            raise click.ClickException(
                f"cannot read the source's catalog: {exc} (use --no-sql to skip)"
            ) from exc
        if problems:
            raise click.ClickException("\n".join(problems))
    click.echo(describe(cfg))
    if sql and any(v.kind == "aggregate" for v in cfg.views.values()):
        dsn = (cfg.source.lookup_dsn or cfg.source.dsn).get_secret_value()
        click.echo("\nSQL of the aggregate views:\n")
        try:
            click.echo(view_sql(cfg, dsn))
        except psycopg.OperationalError as exc:
            raise click.ClickException(
                f"cannot read the source's catalog to print the SQL: {exc} "
                "(use --no-sql to skip)"
            ) from exc


# ----------------------------------------------------------------- connector
@main.group()
def connector() -> None:
    """Manage the Debezium PostgreSQL connector over the Connect REST API."""


@connector.command("apply")
@click.option("--wait/--no-wait", default=True, help="wait until the task runs")
@click.pass_context
def connector_apply(ctx: click.Context, wait: bool) -> None:
    """Register or update the connector built from the config."""
    from connectors import debezium

    cfg = load_config(ctx)
    debezium.apply(cfg)
    if wait:
        st = debezium.wait_running(cfg)
        click.echo(
            f"connector {st['connector']} {st['state']}; "
            f"slot lag {st.get('slot_lag_bytes')} bytes"
        )
    else:
        click.echo(f"connector {cfg.connect.connector} applied")


@connector.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def connector_status(ctx: click.Context, as_json: bool) -> None:
    """Connector and task state, and the replication slot's lag in bytes."""
    from connectors import debezium

    st = debezium.status(load_config(ctx))
    if as_json:
        click.echo(json.dumps(st, indent=2))
        return
    click.echo(
        f"{st['connector']}: {st['state']}  slot lag: {st.get('slot_lag_bytes')} bytes"
    )
    for t in st["tasks"]:
        click.echo(f"  task {t['id']}: {t['state']} {t['trace']}")


@connector.command("delete")
@click.option("--drop-slot", is_flag=True, help="also drop the slot and publication")
@click.pass_context
def connector_delete(ctx: click.Context, drop_slot: bool) -> None:
    """Remove the connector (and optionally its replication slot)."""
    from connectors import debezium

    cfg = load_config(ctx)
    found = debezium.delete(cfg)
    click.echo(
        f"connector {cfg.connect.connector} {'deleted' if found else 'was absent'}"
    )
    if drop_slot:
        gone = debezium.drop_slot(cfg)
        click.echo(f"slot {cfg.source.slot} {'dropped' if gone else 'still active'}")


# -------------------------------------------------------------- pipeline
@main.command()
@click.option(
    "--views",
    "view_names",
    default=None,
    help="comma-separated views this worker serves (default: all)",
)
@click.option(
    "--sinks",
    "sink_names",
    default=None,
    help="comma-separated sinks this worker writes (default: all of its views'); "
    "a worker set per sink keeps a slow store from holding back the others",
)
@click.option(
    "--metrics-port",
    type=int,
    default=None,
    help="metrics/health port (default: worker.metrics_port; 0 = off)",
)
@click.pass_context
def worker(
    ctx: click.Context,
    view_names: str | None,
    sink_names: str | None,
    metrics_port: int | None,
) -> None:
    """Run a consumer worker until SIGTERM/SIGINT (then drain and leave)."""
    from pipeline.worker import run_worker

    cfg = load_config(ctx)
    names = [v.strip() for v in view_names.split(",")] if view_names else None
    sinks = [s.strip() for s in sink_names.split(",")] if sink_names else None
    run_worker(cfg, names, metrics_port, sinks)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per view and sink: consumer lag, time lag, applied LSN; slot lag; DLQ."""
    from pipeline import status as status_mod

    st = status_mod.collect(load_config(ctx))
    click.echo(json.dumps(st, indent=2) if as_json else status_mod.render(st))


@main.command()
@click.option("--host", default=None, help="listen address (default: api.host)")
@click.option("--port", type=int, default=None, help="port (default: api.port)")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the read API, /metrics, /healthz, /readyz and the /status page."""
    from query.server import serve as run_server

    run_server(load_config(ctx), host, port)


@main.command()
@click.argument("views", nargs=-1)
@click.option("--sample", type=click.IntRange(1), help="compare N random documents")
@click.option("--repair", is_flag=True, help="rewrite drifted documents, then recheck")
@click.pass_context
def verify(
    ctx: click.Context, views: tuple[str, ...], sample: int | None, repair: bool
) -> None:
    """Compare every document in every sink with what the view's SQL returns.

    Exits 1 when any view drifted (missing, extra or differing documents) and
    --repair did not fix it. --repair re-reads drifted aggregate roots in a new
    snapshot (a newer version wins); table views, whose versions are event
    offsets, are rebuilt instead: `readside snapshot VIEW --rebuild --sink NAME`.
    """
    from pipeline.verify import verify as run_verify

    cfg = load_config(ctx)
    reports = run_verify(cfg, list(views) or None, sample=sample)
    for drift in reports:
        click.echo(drift.describe())
    if repair and not all(d.ok for d in reports):
        from pipeline.aggregate import prepare_views
        from pipeline.repair import repair as run_repair
        from pipeline.views import build_views
        from pipeline.worker import build_sinks

        dsn = cfg.source.dsn.get_secret_value()
        built = build_views(cfg, only=list(views) or None)
        prepare_views(built, dsn, strict=False)
        sinks = build_sinks(cfg, sorted({d.sink for d in reports if not d.ok}))
        for sink in sinks.values():
            sink.open()
        try:
            for r in run_repair(built, sinks, reports, dsn):
                click.echo(
                    f"repaired view={r.view} sink={r.sink}: {r.written} written, "
                    f"{r.refused} not rewritten (table views: see `verify --help`)"
                )
        finally:
            for sink in sinks.values():
                sink.close()
        reports = run_verify(cfg, list(views) or None, sample=sample)
        for drift in reports:
            click.echo("after repair: " + drift.describe().splitlines()[0])
    if not all(d.ok for d in reports):
        sys.exit(1)


@main.command()
@click.argument("view")
@click.option("--where", default=None, help="load only the roots (rows) this SQL picks")
@click.option(
    "--sink", "sinks", multiple=True, help="load into this sink only (repeatable)"
)
@click.option("--chunk-size", default=1000, show_default=True, type=click.IntRange(1))
@click.option(
    "--restart", is_flag=True, help="start over instead of resuming an unfinished run"
)
@click.option(
    "--rebuild",
    is_flag=True,
    help="fill a new generation beside the live one, then switch to it atomically",
)
@click.pass_context
def snapshot(
    ctx: click.Context,
    view: str,
    where: str | None,
    sinks: tuple[str, ...],
    chunk_size: int,
    restart: bool,
    rebuild: bool,
) -> None:
    """(Re)load VIEW into its stores while workers keep streaming.

    Aggregate views are read from PostgreSQL in key-ordered chunks, each in
    its own snapshot; a killed run resumes after its last finished chunk.
    Table views replay their compacted topic, or with --where send Debezium an
    incremental-snapshot signal with that condition.

    With --rebuild the view is built again from nothing in a new index,
    collection or key prefix beside the live one, caught up with the stream,
    and switched in atomically (alias, pointer); the old one is dropped.
    Sites keep reading the live documents throughout. A killed rebuild goes
    on from the step it reached when run again.
    """
    from pipeline.snapshot import Loader, Options
    from pipeline.snapshot.progress import ProgressBar
    from pipeline.snapshot.rebuild import Rebuild

    cfg = load_config(ctx)
    opts = Options(view, where, list(sinks) or None, chunk_size, restart)
    with ProgressBar(view) as bar:
        loader = (Rebuild if rebuild else Loader)(cfg, opts, bar.update)
        signal.signal(signal.SIGTERM, loader.stop)
        signal.signal(signal.SIGINT, loader.stop)
        st = loader.run()
    click.echo(bar.summary(st))
    if st.state == "running":  # stopped early
        sys.exit(130)


@main.group()
def focus() -> None:
    """Switch what a focus holds (see `focuses:` in the config)."""


@focus.command("apply")
@click.argument("name")
@click.option("--chunk-size", default=1000, show_default=True, type=click.IntRange(1))
@click.pass_context
def focus_apply(ctx: click.Context, name: str, chunk_size: int) -> None:
    """Backfill what focus NAME now includes and purge what it excludes.

    Order: edit the focus's `where` in the config, restart the workers with
    the new config, then run this. Aggregate views: a snapshot load of the
    newly included roots, then deletes of the documents the focus's stores
    hold that its definition excludes. Table views: an incremental-snapshot
    signal; the workers rewrite the table through the stream.
    """
    from pipeline.snapshot.focus import FocusApply
    from pipeline.snapshot.progress import ProgressBar

    cfg = load_config(ctx)
    with ProgressBar(cfg.focus_view(name)) as bar:
        job = FocusApply(cfg, name, bar.update, chunk_size)
        signal.signal(signal.SIGTERM, job.stop)
        signal.signal(signal.SIGINT, job.stop)
        done = job.run()
    click.echo(done.describe())
    if done.state == "stopped":
        sys.exit(130)


@focus.command("list")
@click.pass_context
def focus_list(ctx: click.Context) -> None:
    """Each focus: its view, its definition and what was last applied."""
    from pipeline.snapshot.state import SnapshotLog

    cfg = load_config(ctx)
    log = SnapshotLog(cfg)
    for name, f in cfg.focuses.items():
        last = log.focus(name)
        applied = "never applied" if last is None else f"applied: {last.where}"
        click.echo(f"{name}: view {cfg.focus_view(name)} where {f.where} ({applied})")


@main.group()
def dlq() -> None:
    """Inspect and replay dead letters."""


@dlq.command("list")
@click.option("--limit", default=50)
@click.pass_context
def dlq_list(ctx: click.Context, limit: int) -> None:
    """Show dead letters: origin, reason and error."""
    from pipeline import dlq as dlq_mod

    cfg = load_config(ctx)
    n = 0
    for rec, _c in dlq_mod.read_all(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic):
        t, p, o = rec.origin
        h = rec.headers
        click.echo(
            f"{t}[{p}]@{o} reason={h.get(dlq_mod.H_REASON)} "
            f"view={h.get(dlq_mod.H_VIEW, '-')} "
            f"{h.get(dlq_mod.H_CLASS)}: {h.get(dlq_mod.H_MESSAGE, '')[:200]}"
        )
        n += 1
        if n >= limit:
            break
    click.echo(f"{n} dead letter(s) shown")


@dlq.command("replay")
@click.pass_context
def dlq_replay(ctx: click.Context) -> None:
    """Send dead letters (not replayed before) through the pipeline again."""
    from pipeline.replay import replay_dead_letters

    applied, failed = replay_dead_letters(load_config(ctx))
    click.echo(
        f"replayed {applied} dead letter(s); {failed} failed again (re-dead-lettered)"
    )


@main.command()
@click.option(
    "--keep-running", is_flag=True, help="leave the workers and the API running"
)
@click.option(
    "--serve/--no-serve",
    "serve_api",
    default=True,
    show_default=True,
    help="end by serving the API (api.port) and a read-your-writes round trip",
)
@click.option("--seed", default=42, show_default=True, help="seed of the shop data")
@click.option(
    "--live-seconds",
    default=5.0,
    show_default=True,
    help="how long to change rows after the snapshot",
)
@click.pass_context
def demo(
    ctx: click.Context,
    keep_running: bool,
    serve_api: bool,
    seed: int,
    live_seconds: float,
) -> None:
    """Rebuild the demo shop and show it synced into Redis, Elasticsearch, MongoDB.

    Table views and the aggregate view customer_orders; a `readside snapshot`
    of the aggregate view under live changes; then the HTTP API and the
    status page, with a read-your-writes round trip.
    """
    from pipeline.demo.run import run

    sys.exit(
        run(
            ctx.obj["config_path"],
            seed=seed,
            live_seconds=live_seconds,
            keep_running=keep_running,
            serve_api=serve_api,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    main()
