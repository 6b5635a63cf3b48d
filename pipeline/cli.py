"""The ``readside`` command line."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from pipeline import config as config_mod
from pipeline.errors import ReadsideError

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
    """Turns readside's own errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
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
            click.echo(f"{r.name:<14} port={r.port:<6} pid={r.pid or '-':<8} {state}")
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
@click.pass_context
def config_check(ctx: click.Context) -> None:
    """Validate the config and print the resolved plan."""
    cfg = load_config(ctx)
    from pipeline.plan import describe

    click.echo(describe(cfg))


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
    "--metrics-port",
    type=int,
    default=None,
    help="metrics/health port (default: worker.metrics_port; 0 = off)",
)
@click.pass_context
def worker(
    ctx: click.Context, view_names: str | None, metrics_port: int | None
) -> None:
    """Run a consumer worker until SIGTERM/SIGINT (then drain and leave)."""
    from pipeline.worker import run_worker

    cfg = load_config(ctx)
    names = [v.strip() for v in view_names.split(",")] if view_names else None
    run_worker(cfg, names, metrics_port)


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
@click.pass_context
def verify(ctx: click.Context, views: tuple[str, ...]) -> None:
    """Compare every document in every sink with the view's source rows.

    Exits 1 when any view drifted (missing, extra or differing documents).
    """
    from pipeline.verify import verify as run_verify

    reports = run_verify(load_config(ctx), list(views) or None)
    for drift in reports:
        click.echo(drift.describe())
    if not all(d.ok for d in reports):
        sys.exit(1)


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
@click.option("--keep-running", is_flag=True, help="leave the workers running")
@click.option("--seed", default=42, show_default=True, help="seed of the shop data")
@click.option(
    "--live-seconds",
    default=5.0,
    show_default=True,
    help="how long to change rows after the snapshot",
)
@click.pass_context
def demo(
    ctx: click.Context, keep_running: bool, seed: int, live_seconds: float
) -> None:
    """Rebuild the demo shop and show it synced into Redis, Elasticsearch, MongoDB."""
    from pipeline.demo.run import run

    sys.exit(
        run(
            ctx.obj["config_path"],
            seed=seed,
            live_seconds=live_seconds,
            keep_running=keep_running,
        )
    )


if __name__ == "__main__":  # pragma: no cover
    main()
