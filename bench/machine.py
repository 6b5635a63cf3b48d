"""Where a run's CPU goes on the machine: the worker, the broker, the store.

The worker/raw ratio compares a pipeline with a bulk write, and on a machine
of a few cores they do not pay for the same things: while the worker runs,
the Kafka broker serves its fetches and commits and the store takes its
writes, all on the same cores; the raw baseline runs the client and the
store only. This module samples, from ``/proc``, the CPU time of the bench's
own process, of each stack service started by ``readside stack up`` (with
every process below it: PostgreSQL's backends) and of the whole machine, so
the report can say per event what each took and how busy the machine was.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pipeline.config import Config
from pipeline.stack.runner import data_dir

_TICK = os.sysconf("SC_CLK_TCK")
#: The busy fields of ``/proc/stat``'s ``cpu`` line: all but idle and iowait.
_IDLE = (3, 4)


def service_pids(cfg: Config) -> dict[str, int]:
    """The stack's services and the pid ``stack up`` recorded for each."""
    return pids_in(data_dir(cfg.stack) / "run")


def pids_in(run: Path) -> dict[str, int]:
    """The pid of each ``<service>.pid`` file in ``run``."""
    pids: dict[str, int] = {}
    for path in sorted(run.glob("*.pid")) if run.is_dir() else ():
        try:
            pids[path.stem] = int(path.read_text().strip())
        except (OSError, ValueError):
            continue
    return pids


def _processes() -> tuple[dict[int, int], dict[int, float]]:
    """Every process's parent and CPU seconds (user + system, all threads)."""
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while listed
        pid = int(entry.name)
        parent[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    return parent, cpu


def _machine() -> tuple[float, float]:
    """The machine's busy and total CPU seconds since boot, all cores."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:9]]
    total = sum(ticks)
    return (total - sum(ticks[i] for i in _IDLE)) / _TICK, total / _TICK


def sample(services: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of this process (``self``), of each service's
    process tree, and of the machine (``machine_busy``, ``machine_total``),
    with the monotonic clock (``wall``)."""
    parent, cpu = _processes()
    children: dict[int, list[int]] = defaultdict(list)
    for pid, ppid in parent.items():
        children[ppid].append(pid)
    out: dict[str, float] = {"self": cpu.get(os.getpid(), 0.0)}
    for name, root in services.items():
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += cpu.get(pid, 0.0)
            todo += children.get(pid, ())
        out[name] = total
    out["machine_busy"], out["machine_total"] = _machine()
    out["wall"] = time.monotonic()
    return out


def usage(
    before: dict[str, float], after: dict[str, float], events: int
) -> dict[str, Any]:
    """What happened between two samples: CPU µs per event of each process
    (``self``, each service, ``other``: the rest of the machine's busy
    time) and the machine's use (busy cores out of all)."""
    delta = {k: after[k] - before[k] for k in before if k in after}
    wall = delta.pop("wall")
    busy = delta.pop("machine_busy")
    total = delta.pop("machine_total")
    per_event = {k: v / events * 1e6 for k, v in delta.items() if v > 0}
    per_event["other"] = max(busy - sum(delta.values()), 0.0) / events * 1e6
    return {
        "cpu_us_per_event": per_event,
        "busy_cores": busy / wall if wall > 0 else 0.0,
        "cores": os.cpu_count() or 1,
        "busy_share": busy / total if total > 0 else 0.0,
    }
