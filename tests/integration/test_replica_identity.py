"""A table an aggregate view follows only with REPLICA IDENTITY FULL loses
it while the worker runs: an ``ALTER TABLE ... REPLICA IDENTITY DEFAULT``,
or a partition made later (as a tool making each month's partition does)
with the default identity of every new table.

From then on PostgreSQL logs no former link of a row that moves to another
owner (the update comes without its ``before`` image) or is deleted (a
key-only ``before``, its other columns zeros): the former owner's document
keeps the row, with the lag at zero. A worker restarted refuses to start,
but the running one went on in silence. The running worker and ``readside
status`` must name the table or partition, the statement that gives the
identity back and the load; after both, every document matches the source
(pipeline.aggregate.identity).
"""

from __future__ import annotations

import pytest
from harness import wait_for
from items_model import status_warnings

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE owners (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE pets (
    id integer PRIMARY KEY, owner_id integer NOT NULL, name text NOT NULL
);
CREATE TABLE visits (
    id integer, owner_id integer NOT NULL, at date NOT NULL, PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);
CREATE TABLE visits_2026 PARTITION OF visits
    FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
ALTER TABLE pets REPLICA IDENTITY FULL;
ALTER TABLE visits REPLICA IDENTITY FULL;
ALTER TABLE visits_2026 REPLICA IDENTITY FULL;
INSERT INTO owners SELECT i, 'owner ' || i FROM generate_series(1, 5) AS i;
INSERT INTO pets SELECT i, i % 5 + 1, 'pet ' || i FROM generate_series(1, 20) AS i;
INSERT INTO visits
SELECT i, i % 5 + 1, date '2026-01-01' + i FROM generate_series(1, 20) AS i;
"""
VIEWS = {
    "owners": {
        "kind": "aggregate",
        "table": "public.owners",
        "sinks": ["redis"],
        "embed": {
            "pets": {"children": "public.pets", "on": {"owner_id": "id"}},
            "visits": {"children": "public.visits", "on": {"owner_id": "id"}},
        },
    }
}
PETS = "table public.pets has REPLICA IDENTITY DEFAULT, not FULL, which view owners"
VISITS = (
    "partition public.visits_2027 of public.visits has REPLICA IDENTITY DEFAULT, "
    "not FULL, which view owners"
)


def test_a_replica_identity_lost_while_the_worker_runs_is_said(make_pipeline):
    p = make_pipeline(
        SCHEMA,
        ["public.owners", "public.pets", "public.visits"],
        VIEWS,
        worker={"source_check_s": 5.0},
    )
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
    assert status_warnings(p, "capture_warnings") == []

    p.sql("ALTER TABLE pets REPLICA IDENTITY DEFAULT")
    p.sql(
        "CREATE TABLE visits_2027 PARTITION OF visits "
        "FOR VALUES FROM ('2027-01-01') TO ('2028-01-01')"
    )
    p.sql("INSERT INTO visits VALUES (100, 1, '2027-03-01')")
    p.wait_drained(timeout=120)
    p.sql("UPDATE pets SET owner_id = 5 WHERE id = 1")  # leaves owner 2
    p.sql("DELETE FROM pets WHERE id = 2")  # leaves owner 3
    p.sql("UPDATE visits SET owner_id = 4 WHERE id = 100")  # leaves owner 1
    p.wait_drained(timeout=120)
    (drift,) = p.verify()
    assert drift.differing == ["1", "2", "3"], drift.describe()

    pets, visits = status_warnings(p, "capture_warnings")
    assert pets.startswith(PETS), pets
    assert pets.endswith(
        "ALTER TABLE public.pets REPLICA IDENTITY FULL, then readside snapshot owners"
    ), pets
    assert visits.startswith(VISITS), visits
    assert visits.endswith(
        "ALTER TABLE public.visits_2027 REPLICA IDENTITY FULL, "
        "then readside snapshot owners"
    ), visits
    # the running worker says it at its next look (worker.source_check_s)
    p.wait_log(worker, f"ERROR pipeline.publication source: {PETS}", timeout=30)
    p.wait_log(worker, f"ERROR pipeline.publication source: {VISITS}", timeout=10)

    p.sql("ALTER TABLE pets REPLICA IDENTITY FULL")
    p.sql("ALTER TABLE visits_2027 REPLICA IDENTITY FULL")
    assert status_warnings(p, "capture_warnings") == []
    p.run_cli("snapshot", "owners", timeout=300)
    wait_for(lambda: all(d.ok for d in p.verify()), 120, "every document rewritten")
    assert worker.alive(), worker.tail()
