"""A third realistic schema on the real stack: ticketing (ticketing_model.py).

One schema with a many-to-many through a join table shaped as an array of
names, a three-level parent chain (venue -> city -> country) lifted into
each event and each ticket, a range-partitioned table with a composite key
(tickets) whose rows move between partitions, enums, an enum array, arrays,
numerics and timestamptz; two aggregate views and two table views, each in
Redis, Elasticsearch and MongoDB.

The rows that exist before the pipeline starts are loaded by ``readside
snapshot`` (the connector takes no initial snapshot) while a seeded random
workload changes every table, and the worker is SIGKILLed and started again
in the middle of it; at the end, on a drained pipeline, the tops of the
chains are renamed alone (nothing else re-reads their roots). Then every
document of every view in every store must equal the document an oracle
builds from plain table reads, which must also equal the view's SQL
definition (``readside verify``'s answer), and no store may hold a document
more. ``READSIDE_TICKETING_SEED`` replays another workload (default 2026).
"""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import psycopg
import pytest
from harness import REPO, SINKS, wait_for
from ticketing_model import (
    KINDS,
    SCHEMA,
    TABLES,
    VIEWS,
    TicketingLoad,
    expected_documents,
)

from pipeline.aggregate import prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.verify import canonical, view_documents
from pipeline.views import build_views
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("READSIDE_TICKETING_SEED", "2026"))

#: what each view's initial load is told (a table view's --where becomes the
#: condition of Debezium's incremental snapshot)
SNAPSHOTS = {
    "events": (),
    "tickets": (),
    "event_rows": ("--where", "event_id > 0"),
    "ticket_rows": ("--where", "ticket_id > 0"),
}


def sql_definition(p: Any) -> dict[str, dict[str, str]]:
    """Every view's documents as its SQL definition gives them (verify's)."""
    views = build_views(p.config)
    prepare_views(views, p.dsn)
    reader = Reader(p.dsn)
    try:
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            return {
                name: {
                    k: canonical(v)
                    for k, v in view_documents(conn, reader, view).items()
                }
                for name, view in views.items()
            }
    finally:
        reader.close()


def store_differences(p: Any, oracle: dict[str, dict[str, str]]) -> list[str]:
    """Each way a store's copy of a view differs from the oracle: an id too
    many, an id missing, a document not equal."""
    found = []
    sinks = build_sinks(p.config, list(SINKS))
    for name, sink in sinks.items():
        sink.open()
        try:
            for view, want in oracle.items():
                held = sink.ids(view)
                for extra in sorted(held - set(want))[:5]:
                    found.append(f"{view}/{name}: extra document {extra}")
                stored = sink.fetch(view, sorted(want))
                for ident, doc in sorted(want.items()):
                    got = stored.get(ident)
                    if got is None or got.doc is None:
                        found.append(f"{view}/{name}: missing {ident}")
                    elif canonical(got.doc) != doc:
                        found.append(
                            f"{view}/{name}: {ident}\n  expected {doc}"
                            f"\n  stored   {canonical(got.doc)}"
                        )
        finally:
            sink.close()
    return found


def _snapshot(p: Any, view: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        p.cli_args("snapshot", view, "--chunk-size", "40", *SNAPSHOTS[view]),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def test_ticketing_schema_converges_in_every_store_across_a_worker_crash(
    make_pipeline,
):
    started = time.monotonic()
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    p.rewrite(lambda d: d["source"].update(snapshot_mode="no_data"))
    load = TicketingLoad(SEED)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn)
        before = {v: len(d) for v, d in expected_documents(p.dsn).items()}
        p.apply_connector()
        worker = p.start_worker()
        p.wait_log(worker, "assigned partitions=", timeout=90)
        loads = {}
        for view in VIEWS:
            loads[view] = _snapshot(p, view)
            for _ in range(8):
                load.step(conn)
        for _ in range(60):
            load.step(conn)
        # A crash in the middle of the workload (and of the snapshots' writes
        # reaching the stream): the next worker goes on from the committed
        # offsets.
        assert worker.kill() == -9
        for _ in range(40):
            load.step(conn)
        worker = p.start_worker()
        for _ in range(100):
            load.step(conn)
        for view, proc in loads.items():
            out, _ = proc.communicate(timeout=240)
            assert proc.returncode == 0, f"snapshot {view}:\n{out}"
            print(f"snapshot {view}: {out.strip().splitlines()[-1:]}")
        p.wait_drained(timeout=240)
        # The tops of the chains (a ticket's city, an event's country), alone.
        load.renames(conn, ["cities", "countries"])
    assert load.done == {*KINDS, "renames"}, load.done
    p.wait_drained(timeout=240)
    # rows in every partition, moved there by the workload too
    leaves = p.sql("SELECT tableoid::regclass::text FROM tickets GROUP BY 1 ORDER BY 1")
    assert leaves == [("tickets_2024",), ("tickets_2025",), ("tickets_other",)]

    oracle = expected_documents(p.dsn)
    assert all(before[v] > 20 for v in VIEWS), before
    # The oracle (plain table reads) is the views' SQL definition...
    definition = sql_definition(p)
    unlike = [
        f"{view}: {ident}\n  oracle     {doc}"
        f"\n  definition {definition[view].get(ident)}"
        for view in VIEWS
        for ident, doc in sorted(oracle[view].items())
        if definition[view].get(ident) != doc
    ]
    unlike += [
        f"{view}: {ident} only in the definition"
        for view in VIEWS
        for ident in sorted(set(definition[view]) - set(oracle[view]))
    ]
    assert not unlike, f"seed {SEED}:\n" + "\n".join(unlike[:6])
    # ...and every store holds it exactly. An incremental snapshot's rows may
    # still be on their way: wait until they are there, then require it.
    try:
        wait_for(lambda: not store_differences(p, oracle), 120, "the stores", 2)
    finally:
        wrong = store_differences(p, oracle)
        assert not wrong, f"seed {SEED}:\n" + "\n".join(wrong[:12])
    p.assert_converged()
    assert not p.dead_letters()
    print(f"seed={SEED} elapsed={time.monotonic() - started:.0f}s rows={before}")
