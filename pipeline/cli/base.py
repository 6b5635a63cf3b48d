"""What every ``readside`` command shares: the config, errors, output.

``--config`` is accepted before the subcommand (``readside --config x.yaml
status``) and after it (``readside status --config x.yaml``); a value given
after the subcommand wins. Without it, ``$READSIDE_CONFIG``, then
``readside.yaml`` in the working directory.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import click

from pipeline import config as config_mod
from pipeline import logs
from pipeline.errors import ReadsideError, Stopped

CONFIG_HELP = "readside YAML config (default: $READSIDE_CONFIG or readside.yaml)"


def setup_logging(verbose: bool) -> None:
    logs.setup(logging.DEBUG if verbose else logging.INFO)


def _remember_config(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
    """Store a ``--config`` given after a subcommand where the commands read it."""
    if value is not None:
        ctx.ensure_object(dict)["config_path"] = value
    return value


def config_option() -> click.Option:
    """``--config`` for a subcommand: no environment variable of its own (the
    top-level option reads ``$READSIDE_CONFIG``), so it only overrides when
    given."""
    return click.Option(
        ["--config", "config_after"],
        type=click.Path(dir_okay=False),
        default=None,
        expose_value=False,
        callback=_remember_config,
        help=CONFIG_HELP,
    )


class ReadsideGroup(click.Group):
    """A command group whose commands all take ``--config``, and which turns
    readside's own errors into one clear line and exit code 2 (130 for a stop
    asked while waiting for a store)."""

    group_class = type  # subgroups are ReadsideGroups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        if not any(p.name in ("config_path", "config_after") for p in cmd.params):
            cmd.params.append(config_option())
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Stopped as exc:  # a signal while waiting for a store: no error
            click.echo(str(exc), err=True)
            sys.exit(130)
        except ReadsideError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            sys.exit(2)


def config_path(ctx: click.Context) -> str | None:
    """The ``--config`` given (before or after the subcommand), else None."""
    path: str | None = ctx.ensure_object(dict).get("config_path")
    return path


def load_config(ctx: click.Context) -> config_mod.Config:
    return config_mod.load(config_path(ctx))


def stack_config(ctx: click.Context) -> config_mod.StackConfig:
    """The stack section of the config, or defaults when there is no file."""
    path = config_path(ctx) or os.environ.get(config_mod.CONFIG_ENV)
    if path is None and not Path("readside.yaml").exists():
        return config_mod.StackConfig()
    return config_mod.load_stack(path)
