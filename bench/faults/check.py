"""The checks of a fault run; each returns violations (dicts with a ``check``).

(a) ``final_state``: after the last fault cleared, every document of every view
    in every store equals the SQL definition (:func:`pipeline.verify.verify`):
    one violation per missing, extra or differing document.
(b) ``reader``: the anomalies the readers flagged (a version going backwards,
    a deleted document coming back), each attributed to the last fault that
    began before it; those seen during a rebuild (from its start until 10 s
    after it ended) carry ``in_rebuild_window`` so that they are reported
    apart — they are still violations (docs/design.md promises readers a
    complete generation before and after the switch).
(c) ``dead_letters``: the dead-letter topic holds exactly the injected poison
    records (by origin topic, partition, offset), each with a reason header.
    A record dead-lettered twice (at-least-once) is counted, not a violation.
(e) ``wal``: the WAL the replication slot retains, sampled during the run;
    a violation when it is still above :data:`WAL_BOUND` after convergence.
(f) ``command``: every background ``snapshot`` and ``rebuild`` command
    exits 0, or is a rebuild refused (exit 2, naming the lock) while
    another rebuild of the same view ran.
(g) ``ryw``: a read with ``min_lsn`` after the probe's commit
    (:mod:`bench.faults.ryw`) showed the write, in every store; one
    violation per answer that did not, attributed to the last fault that
    began before it.
((d), the time to converge, is measured by the runner.)
"""

from __future__ import annotations

import logging
from typing import Any

from bench.faults.nemesis import Event
from bench.faults.readers import History
from bench.faults.ryw import Probed
from connectors.mongodb import MongoSinkConfig
from pipeline import dlq
from pipeline.config import Config
from pipeline.verify import verify

logger = logging.getLogger(__name__)

REBUILD_GRACE_S = 10.0
#: retained WAL after convergence above this is a violation (bytes)
WAL_BOUND = 256 * 1024 * 1024


#: how a rebuild refused beside another of its view ends its output
REFUSED = "--rebuild` is running into sinks."


def command(
    kind: str, cmd: dict[str, Any], commands: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """A background command's violation, if any: it must exit 0, or, as a
    rebuild, be refused (exit 2, naming the lock) only while another
    rebuild of the same view ran (pipeline.snapshot.runlock)."""
    code = cmd.get("exit")
    if code == 0:
        return []
    if code == 2 and REFUSED in cmd.get("log_tail", ""):
        end = cmd.get("ended", float("inf"))
        beside = [
            o
            for o in commands
            if o is not cmd
            and o.get("view") == cmd.get("view")
            and "--rebuild" in o.get("args", [])
            and o["started"] <= end
            and cmd["started"] <= o.get("ended", float("inf"))
        ]
        if beside:
            return []
        return [{"check": "fault", "kind": f"{kind}_refused_alone", "detail": cmd}]
    what = "timeout" if code is None else "failed"
    return [{"check": "fault", "kind": f"{kind}_{what}", "detail": cmd}]


def final_state(cfg: Config) -> tuple[list[dict[str, Any]], list[str]]:
    """Violations of (a) and the drift reports' text."""
    out: list[dict[str, Any]] = []
    text = []
    for drift in verify(cfg):
        if drift.ok:
            continue
        text.append(drift.describe())
        for what in ("missing", "extra", "differing"):
            for ident in getattr(drift, what):
                out.append(
                    {
                        "check": "final_state",
                        "kind": what,
                        "view": drift.view,
                        "sink": drift.sink,
                        "id": ident,
                    }
                )
    return out, text


def converged(cfg: Config) -> bool:
    return all(d.ok for d in verify(cfg))


def stand_in_sinks(cfg: Config) -> set[str]:
    """MongoDB sinks served by FerretDB (its buildInfo names its version).

    FerretDB 1.24 does not apply ``update {_id, _v: {$lt: v}}``
    atomically: two writers of one document at once can leave the older one
    stored (152 of 200 concurrent pairs in a probe here). MongoDB updates one
    document atomically, so readers' anomalies of such a sink measure the
    stand-in, not readside; they are reported, not counted as violations.
    """
    import pymongo

    out = set()
    for name, sink in cfg.sinks.items():
        if not isinstance(sink, MongoSinkConfig):
            continue
        uri = sink.uri.get_secret_value()
        client: pymongo.MongoClient[dict[str, Any]]
        with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
            if "ferretdbVersion" in client.admin.command("buildInfo"):
                out.add(name)
    return out


def reader(history: History, events: list[Event]) -> list[dict[str, Any]]:
    """Violations of (b), attributed to faults."""
    ordered = sorted(events, key=lambda e: e.start)
    rebuilds = [e for e in ordered if e.kind == "rebuild"]
    out = []
    for anomaly in history.anomalies:
        t = anomaly["t"]
        before = [e.kind for e in ordered if e.start <= t]
        in_rebuild = any(
            r.start <= t <= (r.end or t) + REBUILD_GRACE_S
            and r.detail.get("view") == anomaly["view"]
            for r in rebuilds
        )
        out.append(
            {
                "check": "reader",
                **anomaly,
                "after_fault": before[-1] if before else None,
                "in_rebuild_window": in_rebuild,
            }
        )
    return out


def ryw(probed: Probed, events: list[Event]) -> list[dict[str, Any]]:
    """Violations of (g), attributed to faults.

    A probe that stopped on an error, or checked no read, is a violation
    too: otherwise (g) would pass without having looked.
    """
    ordered = sorted(events, key=lambda e: e.start)
    out: list[dict[str, Any]] = []
    if probed.error is not None:
        out.append({"check": "ryw", "kind": "ryw_probe_failed", "error": probed.error})
    elif probed.reads == 0:
        out.append(
            {
                "check": "ryw",
                "kind": "ryw_unchecked",
                "writes": probed.writes,
                "not_fresh": probed.not_fresh,
            }
        )
    for stale in probed.stale:
        before = [e.kind for e in ordered if e.start <= stale["t"]]
        out.append(
            {
                "check": "ryw",
                "kind": "ryw_stale",
                **stale,
                "after_fault": before[-1] if before else None,
            }
        )
    return out


def dead_letters(
    cfg: Config, poison: list[tuple[str, int, int]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Violations of (c) and a summary (counts, reasons)."""
    records = [r for r, _m in dlq.read_all(cfg.kafka, cfg.kafka.dlq_topic)]
    want = set(poison)
    seen: dict[tuple[str, int, int], int] = {}
    out: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    for rec in records:
        origin = rec.origin
        seen[origin] = seen.get(origin, 0) + 1
        reason = rec.headers.get(dlq.H_REASON)
        reasons[str(reason)] = reasons.get(str(reason), 0) + 1
        if not reason:
            out.append({"check": "dead_letters", "kind": "no_reason", "origin": origin})
        if origin not in want:
            out.append(
                {
                    "check": "dead_letters",
                    "kind": "unexpected",
                    "origin": origin,
                    "reason": reason,
                    "error": rec.headers.get(dlq.H_MESSAGE, "")[:300],
                }
            )
    for origin in sorted(want - set(seen)):
        out.append({"check": "dead_letters", "kind": "poison_lost", "origin": origin})
    summary = {
        "poison_injected": len(poison),
        "dead_letters": len(records),
        "duplicates": sum(n - 1 for n in seen.values() if n > 1),
        "reasons": reasons,
    }
    return out, summary


def wal(
    samples: list[tuple[float, int]], final: int | None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Violations of (e) and the max retained."""
    peak = max((b for _t, b in samples), default=0)
    out = []
    if final is not None and final > WAL_BOUND:
        out.append(
            {"check": "wal", "kind": "retained_after_convergence", "bytes": final}
        )
    return out, {
        "max_retained_bytes": peak,
        "final_retained_bytes": final,
        "samples": len(samples),
    }
