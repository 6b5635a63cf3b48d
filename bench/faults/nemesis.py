"""The nemesis: the faults of a run, scheduled from its seed, and what they did.

Worker-level kinds (safe on a shared stack, the CI mode uses them):

* ``kill9``: ``kill -9`` of a random worker, a replacement started 1-4 s later;
* ``add_worker`` / ``remove_worker``: a worker joins or leaves (SIGTERM,
  drained) the group, so the partitions are rebalanced;
* ``freeze``: a random worker is stopped (SIGSTOP) for 12-25 s, past the
  group's 10 s session timeout, so the broker gives its partitions to the
  others while it holds a batch it polled; then it goes on (SIGCONT) as a
  zombie: its batch is written after the new owner's, its commit is refused;
* ``poison``: an undecodable record produced onto a random table topic (a key
  no row has); it must end in the dead-letter topic with its reason;
* ``snapshot``: one of :data:`SNAPSHOTS` while workers stream: the
  aggregate view's chunked load (``readside snapshot customer_docs``), a
  replay of the ``orders`` table view's topic (``readside snapshot
  orders``), or ``readside snapshot customers --from-source`` (tombstones
  for rows gone from the source, then Debezium's incremental snapshot of
  every row, followed until the workers applied it);
* ``rebuild``: ``readside snapshot VIEW --rebuild`` (the aggregate view, or
  the ``orders`` or ``customers`` table view, whose TOASTed ``bio`` the
  workers read from the source when an update leaves it unchanged); half
  of those not killed get a twin started 1-3 s later, as from a second
  terminal: a rebuild may only be refused (exit 2, naming the lock) while
  another of the same view runs.

Topic kind: ``compaction``: every worker stops (SIGTERM) while the workload
goes on, the view topics get settings that make the broker's cleaner compact
them at once (:data:`COMPACT_NOW`) for 25 s, the overrides are removed and
two workers start again: they resume behind records that compaction removed
(an ``op=d`` record of which only the tombstone is left).

Source kind: ``ddl``: a migration while the workload writes, one of
:data:`WIDENED` changed from ``integer`` to ``bigint`` or back (the table
rewritten under its lock); every record of the table after it has a new
schema, and in a run of Avro records (``--format avro``) the connector
registers a new writer schema.

Service-level kinds (they stop services every pipeline on the stack uses):
``kafka`` (broker stopped, started again), ``connect`` (Kafka Connect killed
with SIGKILL, started again), ``postgres`` (restarted: fast or immediate
shutdown, chosen by the seed), ``redis``, ``elasticsearch``, ``ferretdb``
(stopped for a while, started again), ``stall`` (one of the three stores,
the Kafka broker or PostgreSQL, chosen by the seed, stopped with SIGSTOP for
5-45 s and continued: its connections stay open and nothing answers on
them, a hung service rather than a dead one; the longer stalls outlast the
sinks' timeouts, 5 s for Redis and 30 s for the others, so that the worker
gives up on a write the store then carries out when it goes on), and, in
runs of Avro records only, ``registry`` (the schema registry stopped for
5-15 s, or killed with SIGKILL, and started again).

Each applied fault is an :class:`Event` (kind, start, end, detail); the
commands run by ``snapshot`` and ``rebuild`` run in the background, so that
other faults can hit them, and half of them (by the seed) are killed with
SIGKILL a few seconds in and run again (they must resume).
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # no __all__
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from bench.faults.source import AGG_VIEW, FaultSource, WorkerProc
from pipeline import kafkaclient
from pipeline.config import StackConfig
from pipeline.stack import runner
from pipeline.stack.services import port_in_use

logger = logging.getLogger(__name__)

WORKER_KINDS = (
    "kill9",
    "freeze",
    "add_worker",
    "remove_worker",
    "poison",
    "snapshot",
    "rebuild",
)
TOPIC_KINDS = ("compaction",)
SOURCE_KINDS = ("ddl",)
SERVICE_KINDS = (
    "kafka",
    "connect",
    "postgres",
    "redis",
    "elasticsearch",
    "ferretdb",
    "stall",
    "registry",
)
#: kinds that only runs of Avro records take (``--format avro``)
AVRO_KINDS = ("registry",)
#: the columns a ``ddl`` changes between ``integer`` and ``bigint``
WIDENED = (("customers", "visits"), ("orders", "placed"), ("order_lines", "qty"))
#: the loads a ``snapshot`` runs (see the module's docstring)
SNAPSHOTS = ("chunked", "replay", "from_source")
#: the services a ``stall`` stops with SIGSTOP
STALLED = ("redis", "elasticsearch", "ferretdb", "kafka", "postgres")
ALL_KINDS = WORKER_KINDS + TOPIC_KINDS + SOURCE_KINDS + SERVICE_KINDS
#: topic settings that make the cleaner compact at once (delete.retention.ms
#: keeps the tombstones: only the records before them go)
COMPACT_NOW = {
    "segment.ms": "1000",
    "min.compaction.lag.ms": "0",
    "min.cleanable.dirty.ratio": "0.01",
    "max.compaction.lag.ms": "2000",
}
POISON_BASE = 900_000_000  # keys of poison records: no row ever has them
MIN_WORKERS, MAX_WORKERS = 2, 3


def _reap(pid: int) -> None:
    """Collect ``pid``'s exit if this process started it (a service the
    nemesis started again is its child, and a zombie keeps its pid until
    reaped: the wait for it to be gone would run its whole deadline)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _continue(pid: int, settle_s: float = 3.0) -> None:
    """SIGCONT the process group of ``pid``, then ``pid`` alone again while
    it stops itself. ``runuser``, which starts the stack's services, stops
    itself when it finds its child stopped (as ``su`` does for job control),
    which it finds once continued: left so, it never reaped its server, and
    the next restart of PostgreSQL hung on the defunct process."""
    os.killpg(pid, signal.SIGCONT)
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return  # gone
        if state == "T":
            os.kill(pid, signal.SIGCONT)


@dataclass
class Event:
    kind: str
    start: float
    end: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


def schedule(
    rng: random.Random, kinds: list[str], duration_s: float
) -> list[tuple[float, str]]:
    """Offsets (seconds from the start) and kinds: every kind at least once,
    more faults of random kinds for longer runs, none in the last fifth."""
    extra = max(0, int(duration_s // 40) - len(kinds))
    picked = list(kinds) + [rng.choice(kinds) for _ in range(extra)]
    rng.shuffle(picked)
    window = duration_s * 0.8
    step = window / max(1, len(picked))
    return [(i * step + rng.uniform(0.2, 0.8) * step, k) for i, k in enumerate(picked)]


class Nemesis:
    """Applies faults to one :class:`FaultSource`."""

    def __init__(
        self, src: FaultSource, stack: StackConfig, rng: random.Random
    ) -> None:
        self.src = src
        self.stack = stack
        self.rng = rng
        self.events: list[Event] = []
        self.poison: list[tuple[str, int, int]] = []
        self.commands: list[dict[str, Any]] = []
        #: (worker, exit code) of every SIGTERM the nemesis sent
        self.sigterms: list[tuple[int, int | None]] = []
        self._background: list[threading.Thread] = []

    # ------------------------------------------------------------ dispatch
    def apply(self, kind: str) -> Event:
        ev = Event(kind, time.time())
        self.events.append(ev)
        logger.info("fault kind=%s", kind)
        getattr(self, f"_{kind}")(ev)
        if kind not in ("snapshot", "rebuild"):
            ev.end = time.time()
        return ev

    def wait_background(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for t in self._background:
            t.join(max(1.0, deadline - time.monotonic()))

    def last_cleared(self) -> float:
        return max((e.end or time.time() for e in self.events), default=time.time())

    # ------------------------------------------------------------ workers
    def keep_workers(self) -> None:
        while len(self.src.alive()) < MIN_WORKERS:
            self.src.start_worker()

    def _kill9(self, ev: Event) -> None:
        victim = self.rng.choice(self.src.alive())
        self.src.kill_worker(victim)
        ev.detail = {"worker": victim.n, "pid": victim.proc.pid}
        time.sleep(self.rng.uniform(1.0, 4.0))
        self.keep_workers()

    def _freeze(self, ev: Event) -> None:
        victim = self.rng.choice(self.src.alive())
        frozen_s = self.rng.uniform(12.0, 25.0)
        ev.detail = {"worker": victim.n, "frozen_s": round(frozen_s, 1)}
        self.keep_workers()  # someone must be there to take its partitions
        victim.proc.send_signal(signal.SIGSTOP)
        try:
            time.sleep(frozen_s)
        finally:
            victim.proc.send_signal(signal.SIGCONT)

    def _add_worker(self, ev: Event) -> None:
        if len(self.src.alive()) >= MAX_WORKERS:
            self._remove_one(ev)
        ev.detail["added"] = self.src.start_worker().n

    def _remove_worker(self, ev: Event) -> None:
        if len(self.src.alive()) <= MIN_WORKERS:
            ev.detail["added"] = self.src.start_worker().n
            time.sleep(self.rng.uniform(3.0, 8.0))  # let it join, then leave
        self._remove_one(ev)

    def _remove_one(self, ev: Event) -> None:
        victim = self.rng.choice(self.src.alive())
        ev.detail["removed"] = victim.n
        ev.detail["exit"] = self._sigterm(victim)

    def _sigterm(self, worker: WorkerProc) -> int | None:
        code = self.src.stop_worker(worker)
        self.sigterms.append((worker.n, code))
        return code

    # ------------------------------------------------------------ records
    def _poison(self, ev: Event) -> None:
        cfg = self.src.cfg
        table = self.rng.choice(
            ["public.customers", "public.orders", "public.products"]
        )
        topic = cfg.source.topic(table)
        key_id = POISON_BASE + len(self.poison)
        key = json.dumps(
            {
                "schema": {
                    "type": "struct",
                    "optional": False,
                    "name": "key",
                    "fields": [{"field": "id", "type": "int32", "optional": False}],
                },
                "payload": {"id": key_id},
            }
        ).encode()
        value = self.rng.choice([b"\x00\xffnot json", b'{"hello": "world"}'])
        got: list[tuple[str, int, int]] = []

        def delivered(err: Any, msg: Any) -> None:
            if err is None:
                got.append((msg.topic(), msg.partition(), msg.offset()))

        producer = kafkaclient.producer(cfg.kafka)
        producer.produce(topic, key=key, value=value, on_delivery=delivered)
        producer.flush(30)
        self.poison.extend(got)
        ev.detail = {"at": got}

    def _compaction(self, ev: Event) -> None:
        ev.detail["stopped"] = [self._sigterm(w) for w in self.src.alive()]
        cfg = self.src.cfg
        admin = kafkaclient.admin(cfg.kafka)
        topics = sorted(cfg.view_topics())
        self._topic_config(admin, topics, AlterConfigOpType.SET)
        try:
            time.sleep(25.0)
        finally:
            self._topic_config(admin, topics, AlterConfigOpType.DELETE)
        ev.detail["topics"] = len(topics)
        self.keep_workers()

    @staticmethod
    def _topic_config(admin: AdminClient, topics: list[str], op: Any) -> None:
        resources = [
            ConfigResource(
                ResourceType.TOPIC,
                t,
                incremental_configs=[
                    ConfigEntry(k, v, incremental_operation=op)
                    for k, v in COMPACT_NOW.items()
                ],
            )
            for t in topics
        ]
        for fut in admin.incremental_alter_configs(resources).values():
            fut.result()

    # ------------------------------------------------------------ commands
    def _command(
        self,
        ev: Event,
        args: list[str],
        timeout: float,
        detail: dict[str, Any] | None = None,
        may_kill: bool = True,
    ) -> bool:
        """Run ``readside ARGS`` in the background, recorded in ``detail``
        (the event's own by default); half of the time (by the seed, and
        with ``may_kill``) it is killed with SIGKILL 2-8 s in and run again,
        which must go on from where the killed run stopped. Whether it will
        be killed."""
        detail = ev.detail if detail is None else detail
        log = self.src.workdir / f"{args[0]}-{len(self.commands)}.log"
        kill = may_kill and self.rng.random() < 0.5
        kill_after = self.rng.uniform(2.0, 8.0) if kill else None

        def run() -> None:
            code: int | None = None
            with log.open("wb") as out:
                proc = subprocess.Popen(
                    self.src.cli(*args), stdout=out, stderr=subprocess.STDOUT
                )
                try:
                    if kill_after is not None:
                        try:
                            proc.wait(kill_after)
                        except subprocess.TimeoutExpired:
                            proc.kill()
                            proc.wait(30)
                            detail["killed_after_s"] = round(kill_after, 1)
                            out.write(b"\n--- killed -9 by the nemesis, run again\n")
                            out.flush()
                            proc = subprocess.Popen(
                                self.src.cli(*args),
                                stdout=out,
                                stderr=subprocess.STDOUT,
                            )
                    code = proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
            detail["ended"] = time.time()
            ev.end = max(ev.end, detail["ended"])
            detail["exit"] = code
            detail["log_tail"] = log.read_text(errors="replace")[-600:]

        detail["args"] = args
        detail["started"] = time.time()
        self.commands.append(detail)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self._background.append(t)
        return kill_after is not None

    def _snapshot(self, ev: Event) -> None:
        load = self.rng.choice(SNAPSHOTS)
        ev.detail["load"] = load
        args = {
            "chunked": ["snapshot", AGG_VIEW, "--chunk-size", "50"],
            "replay": ["snapshot", "orders"],
            "from_source": ["snapshot", "customers", "--from-source"],
        }[load]
        self._command(ev, args, 600)

    def _rebuild(self, ev: Event) -> None:
        view = self.rng.choice([AGG_VIEW, "orders", "customers"])
        ev.detail["view"] = view
        args = ["snapshot", view, "--rebuild", "--chunk-size", "50"]
        if self._command(ev, args, 600) or self.rng.random() < 0.5:
            return
        # Half of the rebuilds not killed get a twin 1-3 s in, as from a
        # second terminal: one of the two must be refused, and the other
        # must finish (check.command).
        time.sleep(self.rng.uniform(1.0, 3.0))
        twin: dict[str, Any] = {"view": view}
        ev.detail["twin"] = twin
        self._command(ev, args, 600, detail=twin, may_kill=False)

    # ------------------------------------------------------------ source
    def _ddl(self, ev: Event) -> None:
        """A migration while the workload writes: one of :data:`WIDENED`
        goes from ``integer`` to ``bigint``, or back. Every record of the
        table from then on has a new schema (a new writer schema in the
        registry, for Avro records); the documents' values stay the same."""
        table, column = self.rng.choice(WIDENED)
        with psycopg.connect(self.src.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attname = %s",
                (table, column),
            ).fetchone()
            assert row is not None, f"{table}.{column} not found"
            to = "integer" if row[0] == "bigint" else "bigint"
            ev.detail.update({"table": table, "column": column, "to": to})
            conn.execute("SET lock_timeout = '20s'")
            conn.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE {to}")

    # ------------------------------------------------------------ services
    def _outage(self, ev: Event, service: str, down_s: float) -> None:
        ev.detail["down_s"] = round(down_s, 1)
        try:
            runner.stop_service(self.stack, service)
            time.sleep(down_s)
        finally:  # the stack is shared: the service comes back whatever happened
            runner.start_service(self.stack, service)

    def _kafka(self, ev: Event) -> None:
        self._outage(ev, "kafka", self.rng.uniform(5, 15))

    def _redis(self, ev: Event) -> None:
        self._outage(ev, "redis", self.rng.uniform(5, 15))

    def _elasticsearch(self, ev: Event) -> None:
        self._outage(ev, "elasticsearch", self.rng.uniform(5, 15))

    def _ferretdb(self, ev: Event) -> None:
        self._outage(ev, "ferretdb", self.rng.uniform(5, 15))

    def _registry(self, ev: Event) -> None:
        mode = self.rng.choice(["stop", "kill"])
        ev.detail["mode"] = mode
        if mode == "stop":
            self._outage(ev, "registry", self.rng.uniform(5, 15))
            return
        try:
            self._signal_service("registry", signal.SIGKILL)
            time.sleep(self.rng.uniform(1, 5))
        finally:
            runner.start_service(self.stack, "registry")

    def _stall(self, ev: Event) -> None:
        service = self.rng.choice(STALLED)
        stalled_s = self.rng.uniform(5.0, 45.0)
        ev.detail = {"service": service, "stalled_s": round(stalled_s, 1)}
        st = self._service(service)
        if st.pid is None:
            raise RuntimeError(f"{service} is not running")
        os.killpg(st.pid, signal.SIGSTOP)
        try:
            time.sleep(stalled_s)
        finally:  # the stack is shared: the store goes on whatever happened
            _continue(st.pid)

    def _service(self, service: str) -> runner.ServiceStatus:
        return next(s for s in runner.status(self.stack) if s.name == service)

    def _signal_service(self, service: str, sig: signal.Signals) -> None:
        """Send ``sig`` to the service's process group; wait until it is gone
        (its process and its port: ``runuser`` may exit before the server)."""
        st = self._service(service)
        if st.pid is None:
            return
        os.killpg(st.pid, sig)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and (
            os.path.exists(f"/proc/{st.pid}") or port_in_use(st.port)
        ):
            _reap(st.pid)
            time.sleep(0.2)

    def _connect(self, ev: Event) -> None:
        try:
            self._signal_service("connect", signal.SIGKILL)
            time.sleep(self.rng.uniform(1, 5))
        finally:
            runner.start_service(self.stack, "connect")

    def _postgres(self, ev: Event) -> None:
        mode = self.rng.choice(["fast", "immediate"])
        ev.detail["mode"] = mode
        sig = signal.SIGINT if mode == "fast" else signal.SIGQUIT
        try:
            self._signal_service("postgres", sig)
            time.sleep(self.rng.uniform(1, 5))
        finally:
            runner.start_service(self.stack, "postgres")
