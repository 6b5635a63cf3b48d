"""A readable summary of what a configuration will do (``config check``)."""

from __future__ import annotations

from pipeline.config import Config


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
    lines.append("sinks:")
    for name, sink in cfg.sinks.items():
        lines.append(f"  {name}: {sink.type}")
    lines.append("")
    lines.append("views:")
    for name, view in cfg.views.items():
        lines.append(f"  {name}: table view of {view.table} -> {', '.join(view.sinks)}")
        if view.filter:
            lines.append(f"    filter: {view.filter}")
        for i, step in enumerate(view.transforms):
            lines.append(f"    transform[{i}]: {step.type}")
    return "\n".join(lines)
