"""A readable summary of what a configuration will do (``config check``)."""

from __future__ import annotations

import psycopg

from pipeline.config import Config
from pipeline.viewconfig import AggregateViewConfig
from pipeline.views import build_views


def describe(cfg: Config) -> str:
    src = cfg.source
    lines = ["configuration OK", "", "source:"]
    lines.append(f"  tables captured: {', '.join(src.tables)}")
    lines.append(f"  slot={src.slot} publication={src.publication}")
    lines.append(f"  lookups: {'replica (lookup_dsn)' if src.lookup_dsn else 'source'}")
    lines.append("")
    lines.append("topics:")
    for table in src.tables:
        lines.append(f"  {src.topic(table)}  ({cfg.kafka.partitions} partitions)")
    lines.append(f"  {cfg.kafka.dlq_topic}  (dead letters)")
    lines.append(f"  {cfg.kafka.checkpoint_topic}  (checkpoints)")
    lines.append("")
    lines.append(f"kafka: {cfg.kafka.bootstrap_servers}")
    shared = " ".join(f"{k}={v}" for k, v in cfg.kafka.client.items())
    lines.append(f"  every client: {shared or '(PLAINTEXT, no shared settings)'}")
    if cfg.kafka.extra:
        tuning = " ".join(f"{k}={v}" for k, v in cfg.kafka.extra.items())
        lines.append(f"  worker consumer (extra): {tuning}")
    lines.append("")
    lines.append("sinks:")
    for name, sink in cfg.sinks.items():
        lines.append(f"  {name}: {sink.type}")
    lines.append("")
    lines.append("views:")
    for name, view in cfg.effective_views().items():
        if isinstance(view, AggregateViewConfig):
            tables = ", ".join(dict.fromkeys(view.tables()))
            lines.append(
                f"  {name}: aggregate view of {view.table} -> {', '.join(view.sinks)}"
            )
            lines.append(f"    tables: {tables}")
            if view.where:
                lines.append(f"    where: {view.where}")
        else:
            lines.append(
                f"  {name}: table view of {view.table} -> {', '.join(view.sinks)}"
            )
            if view.filter:
                lines.append(f"    filter: {view.filter}")
        for i, step in enumerate(view.transforms):
            lines.append(f"    transform[{i}]: {step.type}")
    return "\n".join(lines)


def view_sql(cfg: Config, dsn: str) -> str:
    """The SQL that defines each aggregate view, to run by hand.

    Values come out in PostgreSQL's text form; readside maps each by its
    column type (docs/types.md).
    """

    views = build_views(cfg)
    blocks: list[str] = []
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        for name, view in views.items():
            source = view.from_source()
            if source is not None:
                view.prepare(conn, strict=False)
                text = source.definition().as_string(conn)
                blocks.append(f"-- view {name}\n{text};")
    return "\n\n".join(blocks)
