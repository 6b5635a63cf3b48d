"""The isolated pipeline of one fault run: database, views, connector, workers.

One PostgreSQL database ``benchflt<hex>`` holds a small shop:

* ``products`` (parents many roots embed: a price change fans out),
* ``customers`` (the aggregate's roots; ``bio`` is a text column over 2 KB
  stored out of line, so updates that leave it alone send Debezium's
  unavailable-value placeholder; REPLICA IDENTITY DEFAULT on purpose),
* ``orders`` (children of a customer; REPLICA IDENTITY FULL) and
  ``order_lines`` (children of an order, each with its product as a parent).

Foreign keys cascade updates and deletes, so a primary-key change of an order
or a product and a customer's delete are multi-table transactions.

Views, each in Redis, Elasticsearch and MongoDB: the table views
``customers``, ``orders`` and ``products`` and the aggregate view
``customer_docs`` (a customer with its orders, their lines and each line's
product, :data:`bench.snapshot_setup.AGG_VIEW_CFG`). The setup, connector
and cleanup are those of :class:`bench.snapshot_setup.BenchSource`; workers
are ``python -m pipeline.cli --config X worker`` subprocesses so that the
nemesis can ``kill -9`` them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import TopicPartition

from bench import avro_events, formats
from bench.snapshot_setup import AGG_VIEW_CFG, BenchSource
from pipeline import kafkaclient
from pipeline.config import Config

logger = logging.getLogger(__name__)

AGG_VIEW = "customer_docs"
TABLE_VIEWS = {"customers": "customers", "orders": "orders", "products": "products"}
#: the table whose ids each view's documents carry
VIEW_TABLE = {**TABLE_VIEWS, AGG_VIEW: "customers"}
TABLES = ["public.products", "public.customers", "public.orders", "public.order_lines"]

SCHEMA = """
CREATE TABLE products (id integer PRIMARY KEY, name text NOT NULL,
    price numeric(10, 2) NOT NULL);
CREATE TABLE customers (id integer PRIMARY KEY, name text NOT NULL,
    tier text NOT NULL, email text NOT NULL, since timestamptz NOT NULL,
    visits integer NOT NULL DEFAULT 0, bio text NOT NULL);
ALTER TABLE customers ALTER COLUMN bio SET STORAGE EXTERNAL;
CREATE TABLE orders (id integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers (id)
        ON UPDATE CASCADE ON DELETE CASCADE,
    status text NOT NULL, placed integer NOT NULL, total numeric(12, 2) NOT NULL);
CREATE TABLE order_lines (id integer PRIMARY KEY,
    order_id integer NOT NULL REFERENCES orders (id)
        ON UPDATE CASCADE ON DELETE CASCADE,
    product_id integer NOT NULL REFERENCES products (id)
        ON UPDATE CASCADE ON DELETE CASCADE,
    qty integer NOT NULL);
CREATE INDEX ON orders (customer_id);
CREATE INDEX ON order_lines (order_id);
CREATE INDEX ON order_lines (product_id);
ALTER TABLE orders REPLICA IDENTITY FULL;
ALTER TABLE order_lines REPLICA IDENTITY FULL;
"""


def views() -> dict[str, Any]:
    """The view definitions (sinks are added by the config writer)."""
    out: dict[str, Any] = {v: {"table": f"public.{t}"} for v, t in TABLE_VIEWS.items()}
    out[AGG_VIEW] = AGG_VIEW_CFG
    return out


@dataclass
class WorkerProc:
    """One ``readside worker`` subprocess."""

    n: int
    proc: subprocess.Popen[bytes]
    log: Path
    started: float = field(default_factory=time.monotonic)

    def alive(self) -> bool:
        return self.proc.poll() is None


class FaultSource(BenchSource):
    """The database, config, connector and workers of one fault run."""

    def __init__(
        self, base: Config, admin_dsn: str, workdir: Path, fmt: str = "json"
    ) -> None:
        # BenchSource.__init__ with a name of our own (cleanup matches on it).
        self.base = base
        #: the record format (``kafka.format``): json or avro
        self.fmt = fmt
        self.admin_dsn = admin_dsn
        self.prefix = f"benchflt{uuid.uuid4().hex[:8]}"
        self.db = self.prefix
        self.dsn = admin_dsn.rsplit("/", 1)[0] + f"/{self.db}"
        self.workdir = workdir
        self.configs: dict[str, Config] = {}
        self._connectors: list[Config] = []
        self.workers: list[WorkerProc] = []
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db}"')
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(SCHEMA)

    @property
    def cfg(self) -> Config:
        return self.configs["faults"]

    @property
    def config_path(self) -> Path:
        return self.workdir / "faults.yaml"

    def setup(self) -> Config:
        """Write the config, start the connector (initial snapshot of the seed)."""
        kafka = formats.avro_settings(self.base.kafka) if self.fmt == "avro" else {}
        cfg = self.config("faults", views(), TABLES, "initial", kafka)
        self.start_connector(cfg)
        return cfg

    # ------------------------------------------------------------ workers
    def cli(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--config",
            str(self.config_path),
            *args,
        ]

    def start_worker(self) -> WorkerProc:
        n = len(self.workers)
        log = self.workdir / f"worker-{n}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log.open("wb") as out:
            proc = subprocess.Popen(
                self.cli("worker", "--metrics-port", "0"),
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        worker = WorkerProc(n, proc, log)
        self.workers.append(worker)
        logger.info("worker started n=%d pid=%d", n, proc.pid)
        return worker

    def alive(self) -> list[WorkerProc]:
        return [w for w in self.workers if w.alive()]

    def kill_worker(self, worker: WorkerProc) -> None:
        """``kill -9``: no drain, no commit, no leaving the group."""
        worker.proc.send_signal(signal.SIGKILL)
        worker.proc.wait(30)
        logger.info("worker killed n=%d pid=%d", worker.n, worker.proc.pid)

    def stop_worker(self, worker: WorkerProc, timeout: float = 60.0) -> int | None:
        """SIGTERM (drain, commit, leave the group); the exit code."""
        worker.proc.send_signal(signal.SIGTERM)
        try:
            code = worker.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.proc.kill()
            worker.proc.wait(30)
            code = None
        logger.info("worker stopped n=%d exit=%s", worker.n, code)
        return code

    # ------------------------------------------------------------ progress
    def _partitions(self) -> list[TopicPartition]:
        n = self.cfg.kafka.partitions
        return [
            TopicPartition(t, p)
            for t in sorted(self.cfg.view_topics())
            for p in range(n)
        ]

    def behind(self) -> dict[str, int]:
        """Records not yet committed by the group, per topic-partition."""
        consumer = kafkaclient.consumer(
            self.cfg.kafka,
            {"group.id": self.cfg.kafka.group_id, "enable.auto.commit": False},
        )
        try:
            parts = self._partitions()
            got = consumer.committed(parts, timeout=10)
            out = {}
            for tp in got:
                end = consumer.get_watermark_offsets(tp, timeout=10)[1]
                if max(tp.offset, 0) < end:
                    out[f"{tp.topic}/{tp.partition}"] = end - max(tp.offset, 0)
            return out
        finally:
            consumer.close()

    def slot_confirmed(self, lsn: str) -> bool:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT confirmed_flush_lsn >= %s::pg_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s",
                (lsn, self.cfg.source.slot),
            ).fetchone()
        return bool(row and row[0])

    def current_lsn(self) -> str:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
        assert row is not None
        return str(row[0])

    def slot_retained(self) -> int | None:
        """WAL bytes the slot holds back (current LSN - confirmed flush LSN)."""
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) "
                "FROM pg_replication_slots WHERE slot_name = %s",
                (self.cfg.source.slot,),
            ).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def drained(self, timeout: float) -> bool:
        """Whether, within ``timeout``, every change so far is applied and committed."""
        deadline = time.monotonic() + timeout
        lsn = None
        while time.monotonic() < deadline:
            try:
                lsn = lsn or self.current_lsn()
                if self.slot_confirmed(lsn) and not self.behind():
                    return True
            except Exception as exc:  # noqa: BLE001 - a service may be coming back
                logger.info("not drained yet error=%s", exc)
            time.sleep(0.5)
        return False

    def close(self) -> None:
        for w in self.workers:
            if w.alive():
                w.proc.kill()
                w.proc.wait(30)
        super().close()
        if self.fmt == "avro" and "faults" in self.configs:
            avro_events.unregister_all(
                self.cfg.kafka.schema_registry_url,
                self.cfg.source.topic_prefix,
                formats.registry_writer(self.base),
            )
