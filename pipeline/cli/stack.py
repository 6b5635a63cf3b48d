"""``readside stack``: the local stack's services (up, down, status, logs)."""

from __future__ import annotations

import json
import sys

import click

from pipeline.cli.base import ReadsideGroup, stack_config


@click.group(cls=ReadsideGroup)
def stack() -> None:
    """Run the local stack: PostgreSQL, Kafka, Connect+Debezium, Redis, ES, FerretDB."""


@stack.command("up")
@click.option(
    "--with",
    "with_",
    multiple=True,
    type=click.Choice(["opensearch"]),
    help="Also start an optional service (OpenSearch, for opensearch sinks).",
)
@click.pass_context
def stack_up(ctx: click.Context, with_: tuple[str, ...]) -> None:
    """Provision (cached) and start every service; a no-op when already up."""
    from pipeline.stack import runner

    started = runner.up(stack_config(ctx), progress=click.echo, with_=with_)
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
    """Each service with its port, pid and a real health probe.

    Services are found by probing their ports, so this works from any
    directory; the pid is that of the pid file ``stack up`` wrote under the
    stack's data directory (``-`` when this directory has none: ``stack
    down`` run here would not stop that service).
    """
    from pipeline.stack import runner

    cfg = stack_config(ctx)
    rows = runner.status(cfg)
    if as_json:
        click.echo(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        for r in rows:
            state = "healthy" if r.healthy else (r.problem or "?")
            click.echo(f"{r.name:<17} port={r.port:<6} pid={r.pid or '-':<8} {state}")
        foreign = [r.name for r in rows if r.running and r.pid is None]
        if foreign:
            click.echo(
                f"\npid -: found on its port, no pid file in "
                f"{runner.data_dir(cfg) / 'run'}\n(started from another directory "
                "or config; `readside stack down` stops it only from there)"
            )
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
