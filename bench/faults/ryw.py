"""The read-your-writes probe of a fault run: check (g) of :mod:`bench.faults.check`.

A site that committed a write reads with ``min_lsn`` (docs/query-api.md,
"Read-your-writes") and must then see its write: the watermark may lag
(the read waits, or times out with ``NotYetFresh``) but never run ahead.
The probe does what such a site does, while the nemesis breaks things:

* it owns rows no other writer touches (:data:`PROBE_BASE` ids: a product,
  and :data:`PROBES` customers, each with one order of one line of it);
* each round it raises one counter in a transaction of its own (a
  customer's ``visits``, an order's ``placed`` or a line's ``qty``; the
  counters only grow) and takes the WAL position after the commit
  (:func:`query.lsn.commit_lsn`);
* it reads the document of each view the row feeds through
  :class:`query.ReadClient`, once per sink (``read_order`` of that sink
  alone), with ``min_lsn``: the read the API serves, with the server's
  watermark tracker (one, shared).

An answer that shows the counter below what was committed, or no document,
is a violation (``ryw_stale``). A read that times out waiting for the
watermark, or whose store is down, is counted and not a violation.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.faults.source import AGG_VIEW
from bench.faults.workload import RESERVED_IDS
from pipeline.config import Config
from pipeline.events import format_lsn
from query import ReadClient
from query.errors import NotYetFresh, StoreUnavailable
from query.lsn import commit_lsn
from query.watermark import WatermarkTracker

logger = logging.getLogger(__name__)

#: ids of the probe's rows: the first the workload leaves alone (poison
#: keys start at 900,000,000)
PROBE_BASE = RESERVED_IDS
PROBES = 4
#: how long a read waits for the watermark
WAIT_S = 20.0
#: how long a read whose store is down is tried again
RETRY_S = 60.0


@dataclass
class Probed:
    """What the probe did and saw."""

    writes: int = 0
    reads: int = 0
    #: reads that timed out waiting for the watermark
    not_fresh: int = 0
    #: reads whose store did not answer, by sink
    unavailable: dict[str, int] = field(default_factory=dict)
    #: commit -> answered, in seconds, of the reads that answered
    waits: list[float] = field(default_factory=list)
    stale: list[dict[str, Any]] = field(default_factory=list)
    #: the error that stopped the probe before the run's end
    error: str | None = None

    def summary(self) -> dict[str, Any]:
        waits = sorted(self.waits)

        def pct(q: float) -> int | None:
            return round(1000 * waits[int(q * (len(waits) - 1))]) if waits else None

        return {
            "writes": self.writes,
            "reads": self.reads,
            "not_fresh": self.not_fresh,
            "unavailable": self.unavailable,
            "wait_p50_ms": pct(0.5),
            "wait_p99_ms": pct(0.99),
            "stale": len(self.stale),
            "error": self.error,
        }


@dataclass(frozen=True)
class Counter:
    """A counter a round raises: a column of one of the probe's rows."""

    column: str
    table: str
    #: which of the probe's rows (a key of :func:`_ids`) holds it
    row: str
    #: the views it shows in, each with the row whose id is the document's
    views: tuple[tuple[str, str], ...]


COUNTERS = (
    Counter(
        "visits",
        "customers",
        "customer",
        (("customers", "customer"), (AGG_VIEW, "customer")),
    ),
    Counter("placed", "orders", "order", (("orders", "order"), (AGG_VIEW, "customer"))),
    Counter("qty", "order_lines", "line", ((AGG_VIEW, "customer"),)),
)


@dataclass(frozen=True)
class Write:
    """One round's committed write, which every read of it checks."""

    counter: Counter
    #: the ids of the probe customer's rows (:func:`_ids`)
    ids: dict[str, int]
    #: the counter's value after the commit
    wrote: int
    lsn: int
    #: ``time.monotonic()`` at the commit
    committed: float


def _ids(n: int) -> dict[str, int]:
    """The ids of probe customer ``n`` and its order and line."""
    base = PROBE_BASE + 10 * n
    return {"customer": base, "order": base + 1, "line": base + 2}


def _shown(counter: str, view: str, doc: dict[str, Any], ids: dict[str, int]) -> Any:
    """The counter's value in ``doc`` of ``view`` (``None``: not in it)."""
    if view != AGG_VIEW:
        return doc.get(counter)
    if counter == "visits":
        return doc.get("visits")
    order = next(
        (o for o in doc.get("orders") or [] if o.get("id") == ids["order"]), None
    )
    if order is None:
        return None
    if counter == "placed":
        return order.get("placed")
    line = next(
        (x for x in order.get("lines") or [] if x.get("id") == ids["line"]), None
    )
    return None if line is None else line.get("qty")


def seed_rows(dsn: str) -> None:
    """The probe's rows (before the connector's snapshot, or after)."""
    product = PROBE_BASE
    with psycopg.connect(dsn) as conn:
        conn.execute("INSERT INTO products VALUES (%s, 'probe', 1.00)", (product,))
        for n in range(PROBES):
            ids = _ids(n)
            conn.execute(
                "INSERT INTO customers VALUES (%s, %s, 'basic', 'probe@x', "
                "now(), 0, 'probe')",
                (ids["customer"], f"probe {n}"),
            )
            conn.execute(
                "INSERT INTO orders VALUES (%s, %s, 'new', 0, 1.00)",
                (ids["order"], ids["customer"]),
            )
            conn.execute(
                "INSERT INTO order_lines VALUES (%s, %s, %s, 0)",
                (ids["line"], ids["order"], product),
            )


class Probe:
    """The probe's thread (see the module's docstring)."""

    def __init__(self, cfg: Config, dsn: str, seed: int) -> None:
        self.cfg = cfg
        self.dsn = dsn
        self.rng = random.Random(f"{seed}-ryw")
        self.seen = Probed()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._guarded, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(WAIT_S + RETRY_S + 30)
            if self._thread.is_alive() and self.seen.error is None:
                self.seen.error = "the probe's round did not end after its stop"

    def _guarded(self) -> None:
        """Run the rounds; an error that ends them is kept for check (g)."""
        try:
            self._run()
        except Exception as exc:
            logger.exception("ryw probe stopped")
            self.seen.error = repr(exc)

    def _run(self) -> None:
        tracker = WatermarkTracker(self.cfg)
        sinks = sorted({s for v in self.cfg.views.values() for s in v.sinks})
        clients = {
            s: ReadClient(self.cfg, read_order=[s], watermarks=tracker, wait_s=WAIT_S)
            for s in sinks
        }
        conn: psycopg.Connection[Any] | None = None
        try:
            while not self._stop.is_set():
                try:
                    if conn is None or conn.closed:
                        conn = psycopg.connect(self.dsn, autocommit=True)
                    self._round(conn, clients)
                except psycopg.Error as exc:  # PostgreSQL restarting: write again
                    logger.info(
                        "ryw probe write failed error=%s", exc.__class__.__name__
                    )
                    conn = None
                    self._stop.wait(1.0)
                self._stop.wait(0.3)
        finally:
            for c in clients.values():
                c.close()
            tracker.close()
            if conn is not None:
                conn.close()

    def _round(
        self, conn: psycopg.Connection[Any], clients: dict[str, ReadClient]
    ) -> None:
        ids = _ids(self.rng.randrange(PROBES))
        counter = self.rng.choice(COUNTERS)
        col = counter.column
        row = conn.execute(
            f"UPDATE {counter.table} SET {col} = {col} + 1 WHERE id = %s "
            f"RETURNING {col}",
            (ids[counter.row],),
        ).fetchone()
        if row is None:
            raise RuntimeError(f"probe row {counter.table} {ids[counter.row]} is gone")
        write = Write(counter, ids, int(row[0]), commit_lsn(conn), time.monotonic())
        self.seen.writes += 1
        for view, doc_of in counter.views:
            for sink, client in clients.items():
                if sink in self.cfg.views[view].sinks:
                    self._read(client, sink, view, ids[doc_of], write)

    def _read(
        self, client: ReadClient, sink: str, view: str, ident: int, write: Write
    ) -> None:
        deadline = time.monotonic() + RETRY_S
        while True:
            try:
                answer = client.get(view, ident, min_lsn=write.lsn)
                break
            except NotYetFresh:
                self.seen.not_fresh += 1
                return
            except StoreUnavailable:
                self.seen.unavailable[sink] = self.seen.unavailable.get(sink, 0) + 1
                if time.monotonic() > deadline or self._stop.wait(1.0):
                    return
        self.seen.reads += 1
        self.seen.waits.append(time.monotonic() - write.committed)
        col = write.counter.column
        shown = None if answer.doc is None else _shown(col, view, answer.doc, write.ids)
        if shown is None or int(shown) < write.wrote:
            mark = answer.freshness.watermark_lsn
            stale = {
                "t": time.time(),
                "sink": sink,
                "view": view,
                "id": str(ident),
                "counter": col,
                "wrote": write.wrote,
                "shown": shown,
                "min_lsn": format_lsn(write.lsn),
                "watermark_lsn": None if mark is None else format_lsn(mark),
                "store": answer.store,
            }
            logger.warning("ryw stale %s", stale)
            self.seen.stale.append(stale)
