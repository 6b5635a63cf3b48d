"""Failures of workers and stores under load: the pipeline still converges.

Each test runs a background load on an ``orders`` table (inserts, updates that
move rows in and out of the focus filter, deletes) while workers crash, get
killed, lose a partner or lose a store; afterwards the stores must equal the
source (``verify()``), and no stored version may ever have gone backwards.
"""

from __future__ import annotations

import random
import threading
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from harness import BackgroundLoad, Pipeline, stack_config, wait_for

from pipeline.stack import runner
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TYPE order_status AS ENUM ('new', 'paid', 'shipped', 'cancelled');
CREATE TABLE orders (
    id         bigint PRIMARY KEY,
    customer   text NOT NULL,
    status     order_status NOT NULL,
    total      numeric(12, 2) NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
"""
TABLES = ["public.orders"]
VIEWS: dict[str, Any] = {
    "orders": {
        "table": "public.orders",
        "filter": "status != 'cancelled'",
        "transforms": [
            {"type": "compute", "field": "label", "template": "{customer}:{status}"}
        ],
    }
}
STATUSES = ["new", "paid", "shipped", "cancelled"]
SEED_ROWS = 300


class OrdersLoad:
    """One load step: a transaction of 1-3 random changes to ``orders``."""

    def __init__(self, first_id: int) -> None:
        self.ids: list[int] = list(range(1, first_id))
        self.next_id = first_id

    def __call__(self, conn: psycopg.Connection[Any], rng: random.Random) -> None:
        with conn.transaction():
            for _ in range(rng.randrange(1, 4)):
                roll = rng.random()
                if not self.ids or roll < 0.35:
                    conn.execute(
                        "INSERT INTO orders (id, customer, status, total) "
                        "VALUES (%s, %s, %s, %s)",
                        (
                            self.next_id,
                            f"c{rng.randrange(50)}",
                            rng.choice(STATUSES),
                            Decimal(rng.randrange(100_000)) / 100,
                        ),
                    )
                    self.ids.append(self.next_id)
                    self.next_id += 1
                elif roll < 0.9:
                    conn.execute(
                        "UPDATE orders SET status = %s, total = total + 1, "
                        "updated_at = now() WHERE id = %s",
                        (rng.choice(STATUSES), rng.choice(self.ids)),
                    )
                else:
                    ident = self.ids.pop(rng.randrange(len(self.ids)))
                    conn.execute("DELETE FROM orders WHERE id = %s", (ident,))


def _started(make_pipeline: Any, workers: int = 1, **env: str) -> Pipeline:
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    p.sql(
        "INSERT INTO orders (id, customer, status, total) "
        "SELECT g, 'c' || (g %% 50), (ARRAY['new','paid','shipped','cancelled']::"
        "order_status[])[1 + g %% 4], g * 1.5 FROM generate_series(1, %s) g",
        (SEED_ROWS,),
    )
    p.apply_connector()
    for _ in range(workers):
        p.start_worker(env=env or None)
    return p


def _load(p: Pipeline, seed: int, step: OrdersLoad | None = None) -> BackgroundLoad:
    return BackgroundLoad(p.dsn, step or OrdersLoad(SEED_ROWS + 1), seed=seed)


def _wait_progress(p: Pipeline, timeout: float = 60) -> None:
    """Wait until the group committed something (the worker is consuming)."""
    wait_for(lambda: sum(p.committed().values()) > 0, timeout, "a first commit")


class VersionSampler:
    """Reads the versions of sample documents from every sink every ~100 ms.

    Records every time a document's version is lower than one read before
    (a tombstone keeps its version, so a deleted document is no exception).
    """

    def __init__(self, p: Pipeline, ids: list[str]) -> None:
        self.cfg = p.config
        self.ids = ids
        self.seen: dict[tuple[str, str], int] = {}
        self.regressions: list[str] = []
        self.reads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> VersionSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        sinks = build_sinks(self.cfg, list(self.cfg.sinks))
        for sink in sinks.values():
            sink.open()
        try:
            while not self._stop.wait(0.1):
                for name, sink in sinks.items():
                    try:
                        stored = sink.fetch("orders", self.ids)
                    except Exception:  # a store hiccup: sample again later
                        continue
                    self.reads += 1
                    for ident in self.ids:
                        before = self.seen.get((name, ident))
                        have = stored.get(ident)
                        now = -1 if have is None else have.version
                        if before is not None and now < before:
                            self.regressions.append(f"{name}/{ident}: {before}->{now}")
                        self.seen[(name, ident)] = max(now, before or -1)
        finally:
            for sink in sinks.values():
                sink.close()


def test_worker_crash_before_commit_restart_converges_without_regression(
    make_pipeline,
):
    p = _started(make_pipeline, READSIDE_FAULT_CRASH_BEFORE_COMMIT="2")
    crashing = p.workers[0]
    sample = [str(i) for i in range(1, SEED_ROWS + 1, 6)]
    with VersionSampler(p, sample) as sampler, _load(p, seed=1) as load:
        assert crashing.proc.wait(120) == 137, crashing.tail()
        assert "fault injection" in crashing.log_text()
        p.start_worker()
        load.wait_ops(300)
    p.wait_drained()
    wait_for(lambda: sampler.reads >= 30, 30, "version samples")
    assert sampler.regressions == []
    assert sampler.seen, "the sampler read no document"
    p.assert_converged()


def test_worker_sigkill_mid_load_restart_converges(make_pipeline):
    p = _started(make_pipeline)
    with _load(p, seed=2) as load:
        _wait_progress(p)
        load.wait_ops(100)
        assert p.workers[0].kill() == -9
        load.wait_ops(100)
        p.start_worker()
        load.wait_ops(100)
    p.wait_drained()
    p.assert_converged()


def test_worker_group_member_sigkilled_survivor_takes_over(make_pipeline):
    p = _started(make_pipeline, workers=2)
    victim, survivor = p.workers
    # Both members own partitions of the view topic before the kill.
    for w in (victim, survivor):
        p.wait_log(w, f"assigned partitions={p.config.source.topic('public.orders')}")
    with _load(p, seed=3) as load:
        load.wait_ops(150)
        assert victim.kill() == -9
        load.wait_ops(200)
    p.wait_drained(timeout=150)
    assert survivor.alive()
    p.assert_converged()


@pytest.mark.parametrize(
    ("service", "sink"),
    [("redis", "redis"), ("ferretdb", "mongodb"), ("elasticsearch", "elasticsearch")],
)
@pytest.mark.exclusive  # stops a store of the stack
def test_worker_store_outage_commits_nothing_until_store_returns(
    make_pipeline, service, sink
):
    stack = stack_config()
    p = _started(make_pipeline)
    worker = p.workers[0]
    orders = OrdersLoad(SEED_ROWS + 1)  # one id sequence for both writers below
    try:
        with _load(p, seed=4, step=orders) as load:
            _wait_progress(p)
            load.wait_ops(50)
            marker = f"sinks unavailable sinks={sink}"
            failures_before = worker.log_text().count(marker)
            runner.stop_service(stack, service)
            wait_for(
                lambda: worker.log_text().count(marker) > failures_before,
                90,
                f"the worker to back off on {sink}",
            )
            frozen = p.committed()
            load.wait_ops(200)  # keep writing while the store is down
            assert p.committed() == frozen
            ends = p.high_watermarks()
            assert any(ends[k] > frozen[k] for k in ends), "no change while down"
    finally:
        # The writer stops before the store restarts (Elasticsearch takes ~30 s):
        # the backlog stays bounded instead of growing with the restart time.
        runner.start_service(stack, service)
    with _load(p, seed=14, step=orders) as load:
        load.wait_ops(50)  # and changes after the store is back
    p.wait_drained(timeout=240)
    assert worker.alive()
    p.assert_converged()


def test_worker_sigterm_drains_and_exits_zero(make_pipeline):
    p = _started(make_pipeline)
    worker = p.workers[0]
    with _load(p, seed=5) as load:
        _wait_progress(p)
        load.wait_ops(100)
        worker.proc.terminate()
        timeout = p.config.worker.shutdown_timeout_s
        assert worker.proc.wait(timeout) == 0, worker.tail()
    assert "worker stopping" in worker.log_text()
    p.start_worker()
    p.wait_drained()
    p.assert_converged()
