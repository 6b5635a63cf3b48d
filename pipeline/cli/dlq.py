"""``readside dlq``: the dead letters, listed and replayed."""

from __future__ import annotations

import click

from pipeline.cli.base import ReadsideGroup, load_config


@click.group(cls=ReadsideGroup)
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
    for rec, _c in dlq_mod.read_all(cfg.kafka, cfg.kafka.dlq_topic):
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
