"""``readside snapshot`` and ``readside focus``: (re)load what a view or a
focus holds while the workers keep streaming."""

from __future__ import annotations

import signal
import sys

import click

from pipeline.cli.base import ReadsideGroup, load_config


@click.command()
@click.argument("view")
@click.option("--where", default=None, help="load only the roots (rows) this SQL picks")
@click.option(
    "--sink", "sinks", multiple=True, help="load into this sink only (repeatable)"
)
@click.option(
    "--from-source",
    is_flag=True,
    help="for changes the topics never got: write tombstones for rows gone "
    "from the source, then load from the source (a table view: Debezium reads "
    "every row again through the stream, instead of a replay of the topic)",
)
@click.option("--chunk-size", default=1000, show_default=True, type=click.IntRange(1))
@click.option(
    "--restart", is_flag=True, help="start over instead of resuming an unfinished run"
)
@click.option(
    "--writers",
    default=2,
    show_default=True,
    type=click.IntRange(1),
    help="chunks of an aggregate view written at once, each with its own sinks; "
    "processes replaying a table view's topic, each an equal share of it",
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
    from_source: bool,
    chunk_size: int,
    restart: bool,
    writers: int,
    rebuild: bool,
) -> None:
    """(Re)load VIEW into its stores while workers keep streaming.

    Aggregate views are read from PostgreSQL in key-ordered chunks, each in
    its own snapshot; a killed run resumes after its last finished chunk.
    Table views replay their compacted topic, or with --where send Debezium an
    incremental-snapshot signal with that condition (with --from-source, of
    every row: for changes the topic never got, after a tombstone for each
    row gone from the source that the topic still holds).

    With --rebuild the view is built again from nothing in a new index,
    collection or key prefix beside the live one, caught up with the stream,
    and switched in atomically (alias, pointer); the old one is dropped.
    Sites keep reading the live documents throughout. A killed rebuild goes
    on from the step it reached when run again.
    """
    from pipeline.snapshot import Loader, Options
    from pipeline.snapshot.progress import ProgressBar
    from pipeline.snapshot.rebuild import Rebuild
    from pipeline.startup import tune_gc

    cfg = load_config(ctx)
    opts = Options(
        view, where, list(sinks) or None, chunk_size, restart, writers, from_source
    )
    with ProgressBar(view) as bar:
        loader = (Rebuild if rebuild else Loader)(cfg, opts, bar.update)
        signal.signal(signal.SIGTERM, loader.stop)
        signal.signal(signal.SIGINT, loader.stop)
        tune_gc()
        st = loader.run()
    click.echo(bar.summary(st))
    if st.state == "running":  # stopped early
        sys.exit(130)


@click.group(cls=ReadsideGroup)
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
