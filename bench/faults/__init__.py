"""``python -m bench faults``: the seeded fault-injection suite with a history checker.

Each run (:mod:`bench.faults.run`) builds an isolated pipeline on the local
stack (its own database, topics, connector, group and store targets), writes
a random multi-table workload from its seed, applies a nemesis schedule from
the same seed (:mod:`bench.faults.nemesis`) while readers sample every store,
then checks the final state against the SQL definition, the readers' history,
the reads with ``min_lsn`` after the probe's writes, the dead letters and the
slot's retained WAL (:mod:`bench.faults.check`).

``--quick`` (CI) is one run of about 70 s of faults with the worker-level
kinds and ``ddl``. ``--minutes M`` repeats runs with seeds S, S+1, ... until M
minutes have passed. ``--faults kind,kind`` picks the kinds; ``worker``,
``topic``, ``source`` and ``service`` name the groups, ``all`` every kind.
The default is ``worker,topic,source``: the service kinds stop services of
the shared stack that every other pipeline on it uses, so they run only
when asked for. ``--format avro`` runs the pipeline on Avro records in the
stack's schema registry (``kafka.format: avro``), and only then takes the
``registry`` kind. A
failing run prints its seed: ``--seed S`` replays its schedule and workload
(timing differs). The last line printed
is ``violations=N``; the exit code is 1 when N > 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from bench.faults.nemesis import (
    ALL_KINDS,
    AVRO_KINDS,
    SERVICE_KINDS,
    SOURCE_KINDS,
    TOPIC_KINDS,
    WORKER_KINDS,
)
from bench.faults.run import one_run
from bench.scenario import add_admin_dsn, admin_dsn
from pipeline import config as config_mod

logger = logging.getLogger(__name__)

QUICK_SECONDS = 70.0


def parse_kinds(text: str) -> list[str]:
    groups = {
        "worker": WORKER_KINDS,
        "topic": TOPIC_KINDS,
        "source": SOURCE_KINDS,
        "service": SERVICE_KINDS,
        "all": ALL_KINDS,
    }
    out: list[str] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        for kind in groups.get(part, (part,)):
            if kind not in ALL_KINDS:
                raise argparse.ArgumentTypeError(f"unknown fault kind {kind!r}")
            if kind not in out:
                out.append(kind)
    return out


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench faults", description=__doc__)
    p.add_argument(
        "--seed", type=int, default=None, help="first seed (default: random)"
    )
    p.add_argument("--quick", action="store_true", help="CI mode: one short run")
    p.add_argument(
        "--minutes", type=float, default=0.0, help="run seeds until M minutes"
    )
    p.add_argument(
        "--faults",
        type=parse_kinds,
        default=None,
        help="kinds or groups (worker, topic, source, service, all; default "
        "worker,topic,source); "
        f"kinds: {','.join(ALL_KINDS)}",
    )
    p.add_argument(
        "--format",
        choices=["json", "avro"],
        default="json",
        help="record format of the run's pipeline (kafka.format)",
    )
    p.add_argument(
        "--run-seconds", type=float, default=150.0, help="fault phase per run"
    )
    p.add_argument("--converge-timeout", type=float, default=300.0)
    p.add_argument("--config", default=None, help="readside config of the stack")
    add_admin_dsn(p)
    p.add_argument(
        "--workdir", default=None, help="logs and histories (default: a tmp dir)"
    )
    p.add_argument("--out", default="bench/results/faults.json")
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randint(1, 99_999)
    if args.quick:
        args.run_seconds = QUICK_SECONDS
        args.faults = args.faults or list(WORKER_KINDS + SOURCE_KINDS)
        args.minutes = 0.0
        args.converge_timeout = min(args.converge_timeout, 120.0)
    args.faults = args.faults or list(WORKER_KINDS + TOPIC_KINDS + SOURCE_KINDS)
    if args.format != "avro":
        args.faults = [k for k in args.faults if k not in AVRO_KINDS]
    if not args.faults:
        p.error("no fault kind left to run (registry takes --format avro)")
    return args


def table(runs: list[dict[str, Any]], kinds: list[str]) -> list[dict[str, Any]]:
    """One row per fault kind: runs, faults applied, violations, converge times."""
    rows = []
    for kind in [*kinds, "all"]:
        mine = [
            r
            for r in runs
            if kind == "all" or any(f["kind"] == kind for f in r.get("faults", []))
        ]
        times = [r["converge_s"] for r in mine if r.get("converge_s") is not None]
        rows.append(
            {
                "fault": kind,
                "runs": len(mine),
                "applied": sum(
                    1
                    for r in mine
                    for f in r.get("faults", [])
                    if kind in ("all", f["kind"])
                ),
                "violations": sum(len(r.get("violations", [])) for r in mine),
                "reader_after_it": sum(
                    1
                    for r in mine
                    for v in r.get("violations", [])
                    if v["check"] == "reader" and kind in ("all", v.get("after_fault"))
                ),
                "converge_p50_s": statistics.median(times) if times else None,
                "converge_max_s": max(times) if times else None,
                "not_converged": sum(1 for r in mine if not r.get("converged")),
                "failing_seeds": sorted(
                    {r["seed"] for r in mine if r.get("violations") or r.get("error")}
                ),
            }
        )
    return rows


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.1f}"
    if isinstance(v, list):
        return ",".join(str(x) for x in v) or "-"
    return str(v)


def markdown(results: dict[str, Any]) -> str:
    cols = [
        "fault",
        "runs",
        "applied",
        "violations",
        "reader_after_it",
        "converge_p50_s",
        "converge_max_s",
        "not_converged",
        "failing_seeds",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in results["table"]:
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    for run in results["runs"]:
        counts: dict[str, int] = {}
        for v in run.get("violations", []):
            key = f"{v['check']}:{v['kind']}" + (
                " (rebuild window)" if v.get("in_rebuild_window") else ""
            )
            counts[key] = counts.get(key, 0) + 1
        what = ", ".join(f"{k}={n}" for k, n in sorted(counts.items())) or "none"
        extra = f" error={run['error']}" if run.get("error") else ""
        lines.append(
            f"seed={run['seed']} converged={run.get('converged')} "
            f"converge_s={_fmt(run.get('converge_s'))} "
            f"max_wal_retained={run.get('wal', {}).get('max_retained_bytes')} "
            f"dead_letters={run.get('dead_letters', {}).get('dead_letters')}/"
            f"{run.get('dead_letters', {}).get('poison_injected')} poison "
            f"violations: {what}{extra}"
        )
        if run.get("ryw"):
            r = run["ryw"]
            lines.append(
                f"  read-your-writes: {r['reads']} reads of {r['writes']} writes, "
                f"commit to answer p50 {_fmt(r['wait_p50_ms'])} ms "
                f"p99 {_fmt(r['wait_p99_ms'])} ms, "
                f"{r['not_fresh']} timed out, {r['stale']} stale"
                + (f", stopped by {r['error']}" if r.get("error") else "")
            )
        lines += [f"  note: {n}" for n in run.get("notes", [])]
        if run.get("stand_in_anomalies"):
            lines.append(
                f"  FerretDB reader anomalies (not counted, see check.stand_in_sinks)"
                f": {len(run['stand_in_anomalies'])}"
            )
    lines.append(f"violations={results['violations']}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    report.setup_logging()
    base = config_mod.load(args.config)
    args.admin_dsn = admin_dsn(base, args.admin_dsn)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="readside-bench-faults-"))
    started = time.monotonic()
    runs: list[dict[str, Any]] = []
    seed = args.seed
    while True:
        try:
            run = one_run(
                base,
                args.admin_dsn,
                seed,
                args.faults,
                args.run_seconds,
                root / f"seed-{seed}",
                args.converge_timeout,
                args.format,
            )
        except Exception as exc:  # a run that could not finish is a failing run
            logger.exception("run failed seed=%d", seed)
            run = {
                "seed": seed,
                "error": repr(exc),
                "violations": [{"check": "run", "kind": "error", "error": repr(exc)}],
            }
        runs.append(run)
        logger.info(
            "run done seed=%d violations=%d converge_s=%s",
            seed,
            len(run.get("violations", [])),
            run.get("converge_s"),
        )
        for v in run.get("violations", [])[:10]:  # the log names the first ones
            logger.warning("violation seed=%d %s", seed, json.dumps(v, default=str))
        seed += 1
        if time.monotonic() - started >= args.minutes * 60:
            break
    results: dict[str, Any] = {
        "machine": report.machine(base),
        "args": {
            k: getattr(args, k)
            for k in ("seed", "quick", "minutes", "faults", "run_seconds")
        },
        "workdir": str(root),
        "runs": runs,
        "table": table(runs, args.faults),
        "kinds_applied": {
            k: sum(1 for r in runs for f in r.get("faults", []) if f["kind"] == k)
            for k in args.faults
        },
        "violations": sum(len(r.get("violations", [])) for r in runs),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print(markdown(results))
    return 1 if results["violations"] else 0
