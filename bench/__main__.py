"""``python -m bench``: decode rate, worker throughput per sink, raw bulk baseline.

(``python -m bench api`` measures the read API instead: see :mod:`bench.api`;
``python -m bench snapshot`` measures ``readside snapshot`` and the coalescing
of aggregate re-reads: see :mod:`bench.snapshot`; ``python -m bench pgsync``
puts readside beside pgsync on the same aggregate view: see :mod:`bench.pgsync`;
``python -m bench faults`` is the fault-injection suite: see :mod:`bench.faults`.)

One run measures, on the local stack, for each record format of
``--format`` (``json``: Kafka Connect's JsonConverter with schemas; ``avro``:
the Confluent wire format with the schemas in the stack's registry; ``both``,
the default; see :mod:`bench.formats`):

(a) readside's converter over N pre-built Debezium records, and the bare
    parse of the same values (orjson, fastavro) as the ceiling;
(b) the worker (in process, :mod:`bench.worker_run`) reading N events from a
    fresh topic with a fresh consumer group into fresh targets: Redis alone,
    Elasticsearch alone, MongoDB alone and all three together, with the CPU
    time of each of its stages (:mod:`bench.stages`);
(c) the same documents bulk-written straight into each store (:mod:`bench.raw`);

before (b) and (c), each store takes the same documents once, unmeasured
(:func:`warm_up`), so neither row measures a store still warming up; and
prints worker/raw ratios; a sink whose ratio is below 0.5 is profiled
(cProfile) on a second run. The report goes to stdout as Markdown and to
``bench/results/latest.json``. Topics, groups, targets and registered schemas
are removed after.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient

from bench import events, formats, machine, raw, report, worker_report
from bench.child import run_child
from bench.formats import Format
from bench.scenario import bench_config, cleanup, create_topics
from bench.sinks import need_sink
from connectors.elasticsearch import ElasticsearchSinkConfig
from connectors.mongodb import MongoSinkConfig
from connectors.redis import RedisSinkConfig
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.config import Config
from pipeline.decode import FakeMessage
from pipeline.events import ChangeEvent, Upsert
from pipeline.views import build_views

logger = logging.getLogger("bench")

SINK_TYPES = ("redis", "elasticsearch", "mongodb")


def documents(cfg: Config, fmt: Format) -> list[tuple[str, dict[str, Any]]]:
    """The documents the view makes of the records (for the raw baseline)."""
    view = build_views(cfg)["items"]
    decoder = fmt.converter()
    docs = []
    for n, (k, v) in enumerate(fmt.records):
        event = decoder.decode(FakeMessage(fmt.topic, v, k, 0, n))
        assert isinstance(event, ChangeEvent)  # the bench produces changes only
        for op in view.route(event, {}):
            if isinstance(op, Upsert):
                docs.append((op.doc_id, op.doc))
    return docs


#: warm-up passes of one store at most, and how close two passes' rates must
#: come to call it warm
WARM_PASSES = 6
WARM_WITHIN = 0.10


def warm_up(
    base: Config, prefix: str, docs: list[tuple[str, dict[str, Any]]], n_mongo: int
) -> None:
    """Write the documents into each store, unmeasured, until two passes in a
    row run at rates within :data:`WARM_WITHIN` of each other (at most
    :data:`WARM_PASSES` passes).

    A store in a JVM (Elasticsearch) minutes after ``stack up`` still
    compiles its hot paths, on the same cores as the worker: right after
    a restart it spent about 4x the CPU per document it spends once warm,
    in the worker's run more than in the raw one, so the first bench after
    ``stack up`` measured the compiler. Both rows of every store now start
    on a warm store.
    """
    for kind in SINK_TYPES:
        count = n_mongo if kind == "mongodb" else len(docs)
        rates: list[float] = []
        while len(rates) < WARM_PASSES and not (
            len(rates) >= 2 and abs(rates[-1] / rates[-2] - 1) <= WARM_WITHIN
        ):
            rates.append(raw_rate(kind, base, f"{prefix}warm", docs[:count]))
        logger.info(
            "warmed up store=%s docs=%d passes_docs_per_s=%s",
            kind,
            count,
            ",".join(f"{r:.0f}" for r in rates),
        )


def run_worker(spec: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    return run_child("bench.worker_run", spec, timeout_s)


def raw_rate(
    kind: str, cfg: Config, prefix: str, docs: list[tuple[str, dict[str, Any]]]
) -> float:
    name = f"{prefix}-raw-items".lower()
    if kind == "redis":
        return raw.redis_rate(need_sink(cfg, RedisSinkConfig), name, docs)
    if kind == "elasticsearch":
        es = need_sink(cfg, ElasticsearchSinkConfig)
        return raw.elasticsearch_rate(es, f"bench-{name}", docs)
    return raw.mongodb_rate(need_sink(cfg, MongoSinkConfig), name, docs)


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["api"]:  # python -m bench api: the read API (bench/api.py)
        from bench import api

        return api.main(args_in[1:])
    if args_in[:1] == ["snapshot"]:  # python -m bench snapshot: bench/snapshot.py
        from bench import snapshot

        return snapshot.main(args_in[1:])
    if args_in[:1] == ["pgsync"]:  # python -m bench pgsync: bench/pgsync.py
        from bench import pgsync

        return pgsync.main(args_in[1:])
    if args_in[:1] == ["scale"]:  # python -m bench scale: bench/scale.py
        from bench import scale

        return scale.main(args_in[1:])
    if args_in[:1] == ["faults"]:  # python -m bench faults: bench/faults/
        from bench import faults

        return faults.main(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument(
        "--mongodb-events",
        type=int,
        default=1_000,
        help="events for the runs with MongoDB (FerretDB is slow)",
    )
    parser.add_argument("--config", default=None, help="readside config of the stack")
    parser.add_argument("--out", default="bench/results/latest.json")
    parser.add_argument(
        "--profile",
        choices=["auto", "always", "never"],
        default="auto",
        help="cProfile a sink (auto: ratio < 0.5)",
    )
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument(
        "--format",
        choices=[*formats.FORMATS, "both"],
        default="both",
        help="record format(s) of the decode rows and worker runs",
    )
    args = parser.parse_args(args_in)
    report.setup_logging()
    base = config_mod.load(args.config)
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    names = formats.FORMATS if args.format == "both" else (args.format,)
    results: dict[str, Any] = {
        "machine": report.machine(base),
        "events": args.events,
        "prefix": prefix,
        "avg_row_bytes": formats.avg_row_bytes(prefix),
        "formats": {},
    }
    admin = kafkaclient.admin(base.kafka)
    built: list[Format] = []
    try:
        for name in names:  # both decode rates first, on a quiet machine
            logger.info("building %d records format=%s", args.events, name)
            fmt = formats.build(
                name,
                prefix + name,
                args.events,
                base.kafka,
                formats.registry_writer(base),
            )
            built.append(fmt)
            results["formats"][name] = {
                "prefix": fmt.prefix,
                "decode": formats.measure_decode(fmt),
                "bare": formats.measure_bare(fmt),
                "rows": {},
            }
        for fmt in built:
            results["formats"][fmt.name]["rows"] = worker_runs(base, admin, fmt, args)
    finally:
        for fmt in built:
            formats.unregister(fmt)
        cleanup(admin, prefix)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(worker_report.markdown(results))
    return 0


def worker_runs(
    base: Config, admin: AdminClient, fmt: Format, args: argparse.Namespace
) -> dict[str, Any]:
    """The worker runs of one format beside the raw bulk writes."""
    n = len(fmt.records)
    n_mongo = min(n, args.mongodb_events)
    rows: dict[str, Any] = {}
    create_topics(admin, [fmt.topic, f"{fmt.prefix}.public.readside_heartbeat"], 3)
    start = time.perf_counter()
    events.produce(base.kafka, fmt.topic, fmt.records)
    logger.info(
        "preloaded %d events format=%s in %.1fs",
        n,
        fmt.name,
        time.perf_counter() - start,
    )
    x_cfg = bench_config(base, fmt.prefix, "x", ["redis"], fmt.kafka)
    docs = documents(config_mod.parse(x_cfg), fmt)
    scenarios = [(t, [t]) for t in SINK_TYPES] + [("all", list(SINK_TYPES))]
    services = machine.service_pids(base)
    warm_up(base, fmt.prefix, docs, n_mongo)
    for name, sinks in scenarios:
        count = n_mongo if "mongodb" in sinks else n
        spec = {
            "config": bench_config(base, fmt.prefix, name, sinks, fmt.kafka),
            "sinks": sinks,
            "expected": count,
            "time_budget_s": args.run_timeout,
            "services": services,
        }
        logger.info("worker run format=%s scenario=%s events=%d", fmt.name, name, count)
        row = run_worker(spec, args.run_timeout + 120)
        if name != "all":
            logger.info("raw bulk write store=%s docs=%d", name, count)
            before = machine.sample(services)
            row["raw_docs_per_s"] = raw_rate(name, base, fmt.prefix, docs[:count])
            row["raw_machine"] = machine.usage(before, machine.sample(services), count)
        row["scenario_events"] = count
        rows[name] = row
        ratio = report.ratio(row)
        if args.profile == "always" or (
            args.profile == "auto" and ratio is not None and ratio < 0.5
        ):
            logger.info("profiling format=%s scenario=%s", fmt.name, name)
            prof_spec = {
                **spec,
                "profile": True,
                "expected": min(count, 10_000),
                "config": bench_config(
                    base, fmt.prefix, name + "-prof", sinks, fmt.kafka
                ),
            }
            row["profile_run"] = run_worker(prof_spec, args.run_timeout + 120)
    return rows


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
