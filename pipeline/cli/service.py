"""``readside worker``, ``serve``, ``status`` and ``verify``: run the pipeline
and the read API, and see how far behind and how exact the read models are."""

from __future__ import annotations

import json
import sys

import click

from pipeline.cli.base import config_path, load_config


@click.command()
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


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Per view and sink: consumer lag, time lag, applied LSN; slot lag; DLQ."""
    from pipeline import status as status_mod

    st = status_mod.collect(load_config(ctx))
    click.echo(json.dumps(st, indent=2) if as_json else status_mod.render(st))


@click.command()
@click.option("--host", default=None, help="listen address (default: api.host)")
@click.option("--port", type=int, default=None, help="port (default: api.port)")
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="server processes on the port, one per core to use (default: api.workers)",
)
@click.pass_context
def serve(
    ctx: click.Context, host: str | None, port: int | None, workers: int | None
) -> None:
    """Serve the read API, /metrics, /healthz, /readyz and the /status page."""
    from query.server import serve as run_server

    run_server(load_config(ctx), host, port, workers, config_path(ctx))


@click.command()
@click.argument("views", nargs=-1)
@click.option("--sample", type=click.IntRange(1), help="compare N random documents")
@click.option("--repair", is_flag=True, help="rewrite drifted documents, then recheck")
@click.pass_context
def verify(
    ctx: click.Context, views: tuple[str, ...], sample: int | None, repair: bool
) -> None:
    """Compare every document in every sink with what the view's SQL returns.

    Exits 1 when any view drifted (missing, extra or differing documents, or
    an id two source rows share: duplicate_ids) and
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
