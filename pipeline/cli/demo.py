"""``readside demo``: the demo shop, synced into every store."""

from __future__ import annotations

import sys

import click

from pipeline.cli.base import config_path


@click.command()
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
    from pipeline.textout import PipeConsole

    sys.exit(
        run(
            config_path(ctx),
            seed=seed,
            live_seconds=live_seconds,
            keep_running=keep_running,
            serve_api=serve_api,
            console=PipeConsole(),
        )
    )
