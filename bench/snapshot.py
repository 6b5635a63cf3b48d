"""``python -m bench snapshot``: ``readside snapshot`` rates, coalescing, memory.

One run, on the local stack, with a database and pipelines of its own
(:mod:`bench.snapshot_setup`; everything is removed afterwards):

1. table view: Debezium's initial snapshot fills the topic (timed on its
   own), then ``readside snapshot catalog --sink S`` replays it into each
   sink in turn (:mod:`bench.snapshot_run`, one process per run), beside the
   raw bulk write of the same documents (:mod:`bench.raw`). FerretDB gets
   the small table (``--mongodb-rows``) and an empty collection, so it
   measures inserts.
2. aggregate view: ``readside snapshot customers --sink S`` (chunked keyset
   reads) into each sink, roots/s and child rows/s, PostgreSQL read time vs
   sink write time, beside the raw bulk write of the finished documents.
   FerretDB loads the roots ``id <= --mongodb-roots`` (``--where``).
3. coalescing while streaming (:mod:`bench.coalesce`): source statements per
   1,000 changes for each ``--batch-sizes``.
4. rebuild: a chunked load of the aggregate view, then ``readside snapshot
   customers --rebuild`` of it in the same process: roots/s of each, and
   their ratio (the rebuild also creates, switches and drops generations).
5. peak RSS of every snapshot process.

The report goes to stdout (Markdown) and ``bench/results/snapshot.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import TopicPartition

from bench import coalesce, raw, report
from bench.child import run_child
from bench.scenario import add_admin_dsn, admin_dsn
from bench.snapshot_setup import AGG_VIEW, SMALL_VIEW, TABLE_VIEW, BenchSource
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.checkpoints import ensure_topics
from pipeline.config import Config
from pipeline.events import Upsert
from pipeline.processor import Processor
from pipeline.views import build_views

logger = logging.getLogger("bench.snapshot")

SINK_TYPES = ("redis", "elasticsearch", "mongodb")
Docs = list[tuple[str, dict[str, Any]]]
QUICK = {
    "rows": 3000,
    "mongodb_rows": 300,
    "roots": 400,
    "mongodb_roots": 100,
    "changes": 400,
    "batch_sizes": "20,200",
}


def run_snapshot(cfg_path: Path, spec: dict[str, Any], timeout_s: float) -> Any:
    """One ``readside snapshot`` in its own process (:mod:`bench.snapshot_run`)."""
    return run_child(
        "bench.snapshot_run", {**spec, "config_path": str(cfg_path)}, timeout_s
    )


def table_documents(cfg: Config, view: str) -> Docs:
    """The documents the table view makes of its topic (for the raw baseline)."""
    views = build_views(cfg, only=[view])
    topic = cfg.source.topic(views[view].cfg.table)
    processor = Processor(dict(views), {topic: [view]})
    consumer = kafkaclient.consumer(cfg.kafka, {"group.id": "unused"})
    docs: Docs = []
    try:
        ends, starts = {}, []
        for p in range(cfg.kafka.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
            if high > low:
                ends[p] = high
                starts.append(TopicPartition(topic, p, low))
        consumer.assign(starts)
        while ends:
            msgs = [m for m in consumer.consume(2000, 1.0) if m.error() is None]
            for m in msgs:
                part, offset = m.partition() or 0, m.offset() or 0
                if offset + 1 >= ends.get(part, 0):
                    ends.pop(part, None)
            batch = processor.process(msgs)
            docs += [
                (op.doc_id, op.doc)
                for op in batch.ops.get(view, ())
                if isinstance(op, Upsert)
            ]
    finally:
        consumer.close()
    return docs


def aggregate_documents(cfg: Config) -> Docs:
    """The aggregate view's finished documents, in key order."""
    views = build_views(cfg, only=[AGG_VIEW])
    dsn = cfg.source.dsn.get_secret_value()
    prepare_views(views, dsn, strict=False)
    view = views[AGG_VIEW]
    assert isinstance(view, AggregateView)
    reader = Reader(dsn)
    try:
        docs = view.documents(reader)
    finally:
        reader.close()
    return sorted(docs.items(), key=lambda kv: int(kv[0]))


def raw_rate(cfg: Config, sink: str, name: str, docs: Docs) -> float:
    s: Any = cfg.sinks[sink]
    if sink == "redis":
        return raw.redis_rate(s, f"{name}raw", docs)
    if sink == "elasticsearch":
        return raw.elasticsearch_rate(s, f"{name}-raw", docs)
    return raw.mongodb_rate(s, f"{name}raw", docs)


def _children(dsn: str, roots: int) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM orders WHERE customer_id <= %(r)s) + "
            "(SELECT count(*) FROM order_lines l JOIN orders o ON o.id = l.order_id "
            "WHERE o.customer_id <= %(r)s)",
            {"r": roots},
        ).fetchone()
    return int(row[0]) if row else 0


def bench_tables(src: BenchSource, args: argparse.Namespace) -> dict[str, Any]:
    cfg = src.table_config()
    start = time.perf_counter()
    src.start_connector(cfg)
    want = args.rows + args.mongodb_rows
    have = src.wait_topic_rows(cfg, want, args.run_timeout)
    seconds = time.perf_counter() - start
    out: dict[str, Any] = {
        "initial_snapshot": {
            "rows": have,
            "seconds": seconds,
            "rows_per_s": have / seconds,
        }
    }
    if have < want:
        raise RuntimeError(f"Debezium initial snapshot: {have} of {want} rows")
    docs: dict[str, Docs] = {}
    counts = [int(n) for n in args.replay_writers.split(",")]
    for sink in args.sinks:
        view = SMALL_VIEW if sink == "mongodb" else TABLE_VIEW
        runs: dict[str, Any] = {}
        for n in counts:
            logger.info("table snapshot view=%s sink=%s writers=%d", view, sink, n)
            runs[str(n)] = run_snapshot(
                src.workdir / "table.yaml",
                {
                    "view": view,
                    "sinks": [sink],
                    "count_held": args.quick,
                    "writers": n,
                },
                args.run_timeout,
            )
        if view not in docs:
            docs = {view: table_documents(cfg, view)}
        logger.info("raw bulk write sink=%s docs=%d", sink, len(docs[view]))
        raw = raw_rate(cfg, sink, f"{src.prefix}{view}", docs[view])
        for writers, row in runs.items():
            row["raw_docs_per_s"], row["writers"] = raw, int(writers)
            row["view"], row["docs"] = view, len(docs[view])
            row["target"] = "empty collection" if sink == "mongodb" else "empty"
        out[sink] = runs[str(counts[-1])]
        out.setdefault("by_writers", {})[sink] = runs
    return out


def bench_aggregate(src: BenchSource, args: argparse.Namespace) -> dict[str, Any]:
    cfg = src.aggregate_config()
    docs = aggregate_documents(cfg)
    out: dict[str, Any] = {}
    for sink in args.sinks:
        roots = args.mongodb_roots if sink == "mongodb" else args.roots
        where = f"id <= {roots}" if roots < args.roots else None
        logger.info("aggregate snapshot sink=%s roots=%d", sink, roots)
        row = run_snapshot(
            src.workdir / "aggregate.yaml",
            {
                "view": AGG_VIEW,
                "sinks": [sink],
                "where": where,
                "chunk_size": args.chunk_size,
                "count_held": args.quick,
            },
            args.run_timeout,
        )
        row["where"], row["children"] = where, _children(src.dsn, roots)
        if "elapsed_s" in row:
            row["children_per_s"] = row["children"] / row["elapsed_s"]
        row["raw_docs_per_s"] = raw_rate(cfg, sink, f"{src.prefix}agg", docs[:roots])
        out[sink] = row
    return out


def bench_streaming(src: BenchSource, args: argparse.Namespace) -> list[Any]:
    cfg = src.configs.get("aggregate") or src.aggregate_config()
    src.start_connector(cfg)
    touched = args.hot_roots or args.roots
    out: list[Any] = []
    for b in args.batch_sizes.split(","):
        out += coalesce.measure(
            cfg, src.dsn, int(b), args.changes, touched, args.run_timeout
        )
    return out


def bench_rebuild(src: BenchSource, args: argparse.Namespace) -> dict[str, Any]:
    """A chunked load, then ``--rebuild`` of the same view, in one process.

    Sinks that load every root only: a rebuild has no ``--where``. The topics
    must exist for its catch-up; with no writer it has nothing to apply.
    """
    cfg = src.configs.get("aggregate") or src.aggregate_config()
    admin = kafkaclient.admin(cfg.kafka)
    ensure_topics(admin, [(t, cfg.kafka.partitions, True) for t in cfg.view_topics()])
    out: dict[str, Any] = {}
    for sink in args.sinks:
        if sink == "mongodb" and args.mongodb_roots < args.roots:
            continue
        logger.info("aggregate snapshot then rebuild sink=%s", sink)
        out[sink] = run_snapshot(
            src.workdir / "aggregate.yaml",
            {
                "view": AGG_VIEW,
                "sinks": [sink],
                "chunk_size": args.chunk_size,
                "rebuild": True,
            },
            args.run_timeout,
        )
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench snapshot", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="table view rows")
    p.add_argument("--mongodb-rows", type=int, default=20_000)
    p.add_argument("--roots", type=int, default=100_000, help="aggregate roots")
    p.add_argument("--mongodb-roots", type=int, default=20_000)
    p.add_argument("--chunk-size", type=int, default=1000)
    p.add_argument(
        "--replay-writers",
        default="1,2",
        help="the table view's replay with each of these --writers (processes)",
    )
    p.add_argument("--changes", type=int, default=20_000, help="streamed changes")
    p.add_argument("--batch-sizes", default="100,2000")
    p.add_argument(
        "--hot-roots", type=int, default=0, help="changes hit only the first N roots"
    )
    p.add_argument("--parts", default="table,aggregate,streaming,rebuild")
    p.add_argument("--sink", dest="sinks", action="append", choices=SINK_TYPES)
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    p.add_argument("--config", default=None, help="readside config of the stack")
    add_admin_dsn(p)
    p.add_argument("--run-timeout", type=float, default=1800.0)
    p.add_argument("--out", default="bench/results/snapshot.json")
    args = p.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    args.sinks = args.sinks or list(SINK_TYPES)
    args.mongodb_rows = min(args.mongodb_rows, args.rows)
    args.mongodb_roots = min(args.mongodb_roots, args.roots)
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    report.setup_logging()
    base = config_mod.load(args.config)
    args.admin_dsn = admin_dsn(base, args.admin_dsn)
    workdir = Path(tempfile.mkdtemp(prefix="readside-bench-snapshot-"))
    src = BenchSource(base, args.admin_dsn, workdir)
    results: dict[str, Any] = {
        "machine": report.machine(base),
        "sizes": {
            k: getattr(args, k)
            for k in ("rows", "mongodb_rows", "roots", "mongodb_roots", "changes")
        }
        | {
            "chunk_size": args.chunk_size,
            "quick": args.quick,
            "hot_roots": args.hot_roots,
            "parts": args.parts,
        },
        "prefix": src.prefix,
    }
    try:
        logger.info("filling tables prefix=%s", src.prefix)
        parts = args.parts.split(",")
        with_table = "table" in parts
        results["fill_s"] = src.fill(
            args.rows if with_table else 0,
            args.mongodb_rows if with_table else 0,
            args.roots,
        )
        for part, bench in (
            ("table", bench_tables),
            ("aggregate", bench_aggregate),
            ("streaming", bench_streaming),
            ("rebuild", bench_rebuild),
        ):
            if part in parts:
                results[part] = bench(src, args)
    finally:
        src.close()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(report.snapshot_markdown(results))
    return 0
