"""``python -m bench scale``: 1, 2 and 3 worker processes in one group.

For each worker count N it starts N ``readside worker`` processes in a
fresh consumer group (a table view into Redis, keys of its own), waits until
the group is stable with every member assigned, then produces ``--events``
of the benchmark's JSON records to the group's own topic of
``--partitions`` (3) partitions, and follows the group's committed offsets.
The rate is taken between the group's first and last commit; the CPU is the
workers' user + system time (``/proc/PID/stat``) over the same span, per
event: on a shared 2-core machine that is the figure to scale by
(``docs/benchmarks.md`` has the capacity model it gives).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from bench import events, report
from bench.scenario import bench_config, cleanup, create_topics
from pipeline import config as config_mod
from pipeline import kafkaclient
from pipeline.sourceconfig import KafkaConfig
from pipeline.views import build_views
from pipeline.worker import build_sinks

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (and its reaped children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / _TICKS


def _committed(kafka: KafkaConfig, group: str, parts: list[TopicPartition]) -> int:
    consumer = kafkaclient.consumer(kafka, {"group.id": group})
    try:
        got = consumer.committed(parts, timeout=10)
    finally:
        consumer.close()
    return sum(max(tp.offset, 0) for tp in got)


def _stable(admin: AdminClient, group: str, members: int) -> bool:
    found = admin.describe_consumer_groups([group])[group].result()
    return (
        str(found.state).endswith("STABLE")
        and len(found.members) == members
        and all(m.assignment.topic_partitions for m in found.members)
    )


def run_scale(
    base: config_mod.Config,
    prefix: str,
    total: int,
    n: int,
    partitions: int,
    timeout_s: float,
) -> dict[str, Any]:
    admin = kafkaclient.admin(base.kafka)
    topic = f"{prefix}.{events.TABLE}"
    create_topics(admin, [topic, f"{prefix}.public.readside_heartbeat"], partitions)
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    records = list(events.records(prefix, total))
    spec = bench_config(base, prefix, "scale", ["redis"])
    path = Path(tempfile.mkdtemp(prefix="readside-scale-")) / "readside.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    group = spec["kafka"]["group_id"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "--config", str(path), "worker"],
            stdout=subprocess.DEVNULL,
            stderr=(path.parent / f"worker-{i}.log").open("wb"),
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for i in range(n)
    ]
    first: tuple[float, int, float] | None = None  # (time, committed, CPU s)
    last: tuple[float, int, float] = (time.perf_counter(), 0, 0.0)
    deadline = time.monotonic() + timeout_s
    cpu = [0.0] * n
    try:
        while not _stable(admin, group, n):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{n} worker(s) never formed a stable group")
            time.sleep(0.5)
        events.produce(base.kafka, topic, records)
        while time.monotonic() < deadline:
            done = _committed(base.kafka, group, parts)
            now = time.perf_counter()
            for i, proc in enumerate(procs):
                cpu[i] = _cpu_s(proc.pid)
            if done and first is None:
                first = (now, done, sum(cpu))
            if done > last[1]:
                last = (now, done, sum(cpu))
            if done >= total:
                break
            time.sleep(0.05)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
        cfg = config_mod.parse(spec, "<bench>")
        views = build_views(cfg)
        for sink in build_sinks(cfg, ["redis"]).values():
            sink.open()
            for view in views:
                getattr(sink, "drop", lambda _v: None)(view)
            sink.close()
        cleanup(admin, prefix)
    if first is None or last[1] <= first[1]:
        raise RuntimeError(
            f"{n} worker(s): too few commits to time (see {path.parent})"
        )
    events_timed = last[1] - first[1]
    seconds = last[0] - first[0]
    return {
        "workers": n,
        "events": last[1],
        "complete": last[1] >= total,
        "timed_events": events_timed,
        "seconds": seconds,
        "events_per_s": events_timed / seconds,
        "cpu_s": last[2] - first[2],
        "cpu_ms_per_1k_events": 1e6 * (last[2] - first[2]) / events_timed,
    }


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    base = rows[0]["events_per_s"] if rows else 1.0
    lines = [
        "## readside scale-out: worker processes in one group (Redis)",
        "",
        f"machine: {machine.get('nproc')} CPUs ({machine.get('cpu')}), "
        f"Python {machine.get('python')}; rates and CPU between the group's "
        "first and last commit",
        "",
        "| workers | events | timed events | seconds | events/s | speed-up | "
        "worker CPU s | CPU ms per 1k events |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workers']} | {r['events']:,} | {r['timed_events']:,} | "
            f"{r['seconds']:.2f} | {r['events_per_s']:,.0f} | "
            f"{r['events_per_s'] / base:.2f} | {r['cpu_s']:.1f} | "
            f"{r['cpu_ms_per_1k_events']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--workers", default="1,2,3", help="worker counts to run")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--config", default=None, help="readside config of the stack")
    parser.add_argument("--run-timeout", type=float, default=600.0)
    args = parser.parse_args(argv)
    report.setup_logging()
    base = config_mod.load(args.config)
    run_id = uuid.uuid4().hex[:6]
    rows = []
    for n in (int(x) for x in args.workers.split(",")):
        prefix = f"bench{run_id}n{n}"
        rows.append(
            run_scale(base, prefix, args.events, n, args.partitions, args.run_timeout)
        )
        print(markdown(rows[-1:], {}).splitlines()[-1], file=sys.stderr)
    print(markdown(rows, report.machine(base)))
    return 0
