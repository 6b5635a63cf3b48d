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


class _Group(click.Group):
    """Turns readside's own errors into one clear line and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReadsideError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--config", "config_path", envvar=config_mod.CONFIG_ENV,
              type=click.Path(dir_okay=False), default=None,
              help="readside YAML config (default: $READSIDE_CONFIG or readside.yaml)")
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
    return config_mod.load(path).stack


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


if __name__ == "__main__":  # pragma: no cover
    main()
