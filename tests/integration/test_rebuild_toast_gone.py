"""A rebuild whose catch-up meets rows already gone from the source
(``bench faults --quick --seed 1`` found it in CI).

An update that leaves a TOASTed column alone carries a placeholder; the
worker reads the value from the source row (:mod:`pipeline.toast`). The
rebuild's catch-up replays the topic up to the ends it sampled; a row deleted
at the source after that, but before the catch-up reads it, is gone, while
its delete record lies past the ends. If the catch-up skips such an update,
the new generation keeps the row's older version, and the switch shows sites
a document older than the one they read a moment before, until a live worker
applies the delete.

Here the connector is paused while the rows are deleted, so their delete
records are certainly past the catch-up's ends: at the switch, every store
must hold each document at a version no older than the live generation did
(the delete seen early is a newer state of the row, never an older one).
"""

from __future__ import annotations

import time

import pytest
from harness import SINKS, wait_for

from connectors.debezium import ConnectClient, status
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

#: 3,200 characters of hex from md5: PostgreSQL cannot compress them below
#: the TOAST threshold, so ``bio`` is stored out of line.
BIG = (
    "(SELECT string_agg(md5(random()::text || g::text), '') "
    "FROM generate_series(1, 100) g)"
)
SCHEMA = f"""
CREATE TABLE profiles (id integer PRIMARY KEY, name text NOT NULL, bio text);
INSERT INTO profiles SELECT i, 'name ' || i, {BIG} FROM generate_series(1, 30) i;
"""
VIEWS = {"profiles": {"table": "public.profiles"}}
GONE = list(range(1, 31, 3))


def _connector(p, action: str, state: str) -> None:
    cfg = p.config
    ConnectClient(cfg.connect.url).request(
        "PUT", f"/connectors/{cfg.connect.connector}/{action}"
    )

    def reached() -> bool:
        st = status(cfg)
        return st["state"] == state and all(t["state"] == state for t in st["tasks"])

    wait_for(reached, 60, f"the connector to be {state}")


def test_rebuild_catch_up_never_leaves_a_document_older_than_the_live_one(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.profiles"], VIEWS)
    p.apply_connector()
    p.start_worker()
    # Updates that leave bio alone: records with the TOAST placeholder.
    for _ in range(3):
        p.sql("UPDATE profiles SET name = name || '.'")
    p.wait_drained(timeout=180)
    p.assert_converged()

    ids = [str(i) for i in range(1, 31)]
    sinks = build_sinks(p.config, list(SINKS))
    try:
        for sink in sinks.values():
            sink.open()
        live = {name: sink.fetch("profiles", ids) for name, sink in sinks.items()}
        for name, got in live.items():
            assert sorted(got) == sorted(ids), name

        # The deletes reach the source, not (yet) the topic.
        _connector(p, "pause", "PAUSED")
        p.sql("DELETE FROM profiles WHERE id = ANY(%s)", (GONE,))
        time.sleep(1.0)  # the connector stays paused: no record is produced
        done = p.run_cli("snapshot", "profiles", "--rebuild", timeout=300)
        assert "generation 2" in done.stderr + done.stdout, done.stderr[-2000:]

        behind = []
        for name, sink in sinks.items():
            assert sink.generation("profiles") == 2, name  # type: ignore[attr-defined]
            now = sink.fetch("profiles", ids)
            for ident in ids:
                was = live[name][ident]
                got = now.get(ident)
                if got is None or got.version < was.version:
                    behind.append(
                        (name, ident, was.version, None if got is None else got.version)
                    )
                elif int(ident) not in GONE:
                    assert got.doc == was.doc, (name, ident)
        assert not behind, f"(sink, id, live version, rebuilt version): {behind}"
    finally:
        for sink in sinks.values():
            sink.close()

    _connector(p, "resume", "RUNNING")
    p.wait_drained(timeout=180)
    p.assert_converged()
