"""The ``readside`` command line: one module per command group.

``--config`` is accepted before or after the subcommand
(:mod:`pipeline.cli.base`).
"""

from __future__ import annotations

import faulthandler
import signal
import sys

import click

from pipeline import config as config_mod
from pipeline.cli import demo, dlq, service, snapshot, source, stack
from pipeline.cli.base import CONFIG_HELP, ReadsideGroup, setup_logging


@click.group(cls=ReadsideGroup)
@click.option(
    "--config",
    "config_path",
    envvar=config_mod.CONFIG_ENV,
    type=click.Path(dir_okay=False),
    default=None,
    help=CONFIG_HELP,
)
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def main(ctx: click.Context, config_path: str | None, verbose: bool) -> None:
    """readside: NoSQL read models kept in step with PostgreSQL."""
    setup_logging(verbose)
    # `kill -USR1 <pid>` prints every thread's stack: where a command waits.
    # (To the process's own stderr, which a test runner's capture is not.)
    stderr = sys.__stderr__ or sys.stderr
    faulthandler.register(signal.SIGUSR1, file=stderr, all_threads=True)
    ctx.ensure_object(dict)["config_path"] = config_path


for command in (
    stack.stack,
    source.config_group,
    source.connector,
    service.worker,
    service.status,
    service.serve,
    service.verify,
    snapshot.snapshot,
    snapshot.focus,
    dlq.dlq,
    demo.demo,
):
    main.add_command(command)

__all__ = ["main"]
