"""One fault run: set up, write, read, break things, converge, check.

1. :class:`~bench.faults.source.FaultSource`: database with seeded rows,
   config, connector (initial snapshot), two workers; wait until drained.
2. Readers (one per store), the read-your-writes probe
   (:mod:`bench.faults.ryw`), a WAL sampler and the workload start; the
   nemesis applies its schedule (every chosen kind at least once).
3. At the end of the fault phase the workload stops and every fault clears
   (background snapshot/rebuild commands finish, at least two workers run).
4. Convergence: until the group has committed everything the connector
   produced and :func:`bench.faults.check.converged` holds; its time after
   the last fault cleared is (d).
5. The checks (a), (b), (c), (e), (f), (g) give the run's violations.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from bench.faults import check, ryw, workload
from bench.faults.nemesis import Nemesis, schedule
from bench.faults.readers import Readers
from bench.faults.source import FaultSource
from pipeline.config import Config

logger = logging.getLogger(__name__)


def _wal_sampler(
    src: FaultSource, stop: threading.Event, samples: list[tuple[float, int]]
) -> None:
    while not stop.wait(2.0):
        try:
            got = src.slot_retained()
        except Exception as exc:  # noqa: BLE001 - PostgreSQL may be restarting
            logger.info("wal sample failed error=%s", exc.__class__.__name__)
            continue
        if got is not None:
            samples.append((time.time(), got))


def _converge(
    src: FaultSource, nem: Nemesis, cleared: float, timeout: float
) -> float | None:
    """Seconds from ``cleared`` until the stores equal the SQL definition."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nem.keep_workers()  # a worker that crashed on its own is replaced
        left = deadline - time.monotonic()
        if src.drained(max(1.0, left)):
            try:
                if check.converged(src.cfg):
                    return time.time() - cleared
            except Exception as exc:  # noqa: BLE001 - a store may still be coming back
                logger.info("verify failed error=%s", exc)
        time.sleep(5.0)
    return None


def _dump_stacks(src: FaultSource) -> None:
    """Every live worker prints its threads' stacks into its log (SIGUSR1):
    where a run that did not converge was stuck."""
    for w in src.alive():
        try:
            os.kill(w.proc.pid, signal.SIGUSR1)
        except ProcessLookupError:
            continue
        logger.warning("not converged: stacks of worker n=%d in its log", w.n)
    time.sleep(1.0)


def one_run(
    base: Config,
    admin_dsn: str,
    seed: int,
    kinds: list[str],
    duration_s: float,
    workdir: Path,
    converge_timeout_s: float,
    fmt: str = "json",
) -> dict[str, Any]:
    """One seeded run; its result (violations, faults, figures)."""
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    src = FaultSource(base, admin_dsn, workdir, fmt)
    result: dict[str, Any] = {
        "seed": seed,
        "format": fmt,
        "kinds": kinds,
        "prefix": src.prefix,
    }
    logger.info(
        "fault run seed=%d format=%s kinds=%s prefix=%s",
        seed,
        fmt,
        ",".join(kinds),
        src.prefix,
    )
    wl = workload.Workload(src.dsn, seed, pause_s=0.05)
    stop_wal = threading.Event()
    samples: list[tuple[float, int]] = []
    readers: Readers | None = None
    probe: ryw.Probe | None = None
    try:
        wl.seed_rows(customers=40, products=12)
        ryw.seed_rows(src.dsn)
        cfg = src.setup()
        for _ in range(2):
            src.start_worker()
        t_setup = time.monotonic()
        if not src.drained(240):
            raise RuntimeError(f"initial load not drained; see {workdir}")
        result["initial_load_s"] = round(time.monotonic() - t_setup, 1)
        readers = Readers(cfg, wl, seed)
        readers.start()
        probe = ryw.Probe(cfg, src.dsn, seed)
        probe.start()
        threading.Thread(
            target=_wal_sampler, args=(src, stop_wal, samples), daemon=True
        ).start()
        workload.start(wl)
        nem = Nemesis(src, base.stack, rng)
        t0 = time.monotonic()
        for offset, kind in schedule(rng, kinds, duration_s):
            time.sleep(max(0.0, t0 + offset - time.monotonic()))
            try:
                nem.apply(kind)
            except Exception as exc:  # a fault that could not be applied is reported
                logger.exception("fault failed kind=%s", kind)
                nem.events[-1].detail["error"] = repr(exc)
                nem.events[-1].end = time.time()
            nem.keep_workers()
        time.sleep(max(0.0, t0 + duration_s - time.monotonic()))
        workload.stop(wl)
        writes_stopped = time.time()
        nem.wait_background(900)
        nem.keep_workers()
        cleared = max(nem.last_cleared(), writes_stopped)
        converge_s = _converge(src, nem, cleared, converge_timeout_s)
        if converge_s is None:
            _dump_stacks(src)
        readers.stop()
        probe.stop()
        stop_wal.set()
        violations: list[dict[str, Any]] = []
        final, drift_text = check.final_state(cfg)
        violations += final
        seen = check.reader(readers.history, nem.events)
        stand_in = check.stand_in_sinks(cfg)
        # FerretDB's guarded update is not atomic under two writers (see
        # check.stand_in_sinks): its reader anomalies are reported apart;
        # its final state still counts in (a).
        violations += [v for v in seen if v["sink"] not in stand_in]
        stale = check.ryw(probe.seen, nem.events)
        violations += [v for v in stale if v.get("sink") not in stand_in]
        result["stand_in_anomalies"] = [
            v for v in seen + stale if v.get("sink") in stand_in
        ]
        dead, dlq_summary = check.dead_letters(cfg, nem.poison)
        violations += dead
        wal_v, wal_summary = check.wal(samples, src.slot_retained())
        violations += wal_v
        for ev in nem.events:
            d = ev.detail
            if d.get("error"):
                violations.append(
                    {"check": "fault", "kind": f"{ev.kind}_not_applied", "detail": d}
                )
                continue
            for cmd in (d, d.get("twin")):
                if cmd and "args" in cmd:
                    violations += check.command(ev.kind, cmd, nem.commands)
        result.update(
            {
                "converge_s": None if converge_s is None else round(converge_s, 1),
                "converged": converge_s is not None,
                "violations": violations,
                "drift": drift_text,
                "faults": [
                    {"kind": e.kind, "start": e.start, "end": e.end, "detail": e.detail}
                    for e in nem.events
                ],
                "dead_letters": dlq_summary,
                "wal": wal_summary,
                "workload": {
                    "transactions": len(wl.history),
                    "failed": wl.failed,
                    "ops": dict(sorted(wl.counts.items())),
                },
                "readers": {
                    "observations": readers.history.observations,
                    "transitions": len(readers.history.transitions),
                    "errors": readers.history.errors,
                },
                "ryw": probe.seen.summary(),
                "workers": [{"n": w.n, "exit": w.proc.returncode} for w in src.workers],
            }
        )
        _write_history(workdir, wl, readers)
    finally:
        stop_wal.set()
        workload.stop(wl)
        if readers is not None:
            readers.stop()
        if probe is not None:
            probe.stop()
        src.close()
    return result


def _write_history(workdir: Path, wl: workload.Workload, readers: Readers) -> None:
    """The source history and the readers' transitions, one JSON object a line."""
    with (workdir / "history.jsonl").open("w") as out:
        for tx in wl.history:
            out.write(json.dumps({"source": tx}) + "\n")
        for t, sink, view, ident, version, deleted in readers.history.transitions:
            out.write(
                json.dumps(
                    {
                        "read": {
                            "t": t,
                            "sink": sink,
                            "view": view,
                            "id": ident,
                            "version": version,
                            "deleted": deleted,
                        }
                    }
                )
                + "\n"
            )
