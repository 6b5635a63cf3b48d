"""readside's publication changed by hand while the connector runs (a table
dropped from it, or a row filter added), or the connector's own config
(deletes skipped). PostgreSQL or Debezium leaves those changes out of the
stream without an error, the connector and its heartbeats go on, and the
views stay as they were while their lag reads zero.

The worker (at its start) and ``readside status`` must say what the
publication leaves out and the way back; ``readside connector apply`` must
publish the tables whole again (and set the connector again), and the
snapshot it names must bring the changes the stream never carried, deletes
too (pipeline.publication, connectors.postgres.publication_problems,
connectors.debezium.config_problems, pipeline.snapshot.gone).
"""

from __future__ import annotations

import pytest
from harness import Pipeline, WorkerProc, wait_for
from items_model import BOTH_VIEWS, TABLE_VIEW, started, status_warnings

from connectors.debezium import ConnectClient
from pipeline.snapshot import gone

pytestmark = pytest.mark.integration


def _warnings(p: Pipeline) -> list[str]:
    """What ``readside status`` warns of the capture."""
    return status_warnings(p, "capture_warnings")


def _said_then_set_again(p: Pipeline, worker: WorkerProc, warning: str, said: str):
    """Check that ``warning`` names the way back and a restarted worker says
    ``said``; then ``connector apply``, which must end the warning. Returns
    the worker now running."""
    assert "readside connector apply" in warning
    assert "readside snapshot items --from-source" in warning
    assert worker.terminate() == 0
    again = p.start_worker()
    p.wait_log(again, f"ERROR pipeline.publication source: {said}", timeout=60)
    p.run_cli("connector", "apply")
    assert _warnings(p) == []
    return again


def _drop_table(p: Pipeline, pub: str) -> str:
    p.sql(f"ALTER PUBLICATION {pub} DROP TABLE public.items")
    return f"publication {pub} does not publish public.items: their changes"


def _row_filter(p: Pipeline, pub: str) -> str:
    src = p.config.source
    p.sql(
        f"ALTER PUBLICATION {pub} SET TABLE public.items WHERE (id > 10), "
        f"{src.heartbeat_table}, {src.signal_table}"
    )
    return f"publication {pub} has a row filter on public.items"


@pytest.mark.parametrize("change", [_drop_table, _row_filter])
def test_a_publication_changed_by_hand_is_said_and_mended(make_pipeline, change):
    p, worker = started(make_pipeline, BOTH_VIEWS)
    assert _warnings(p) == []
    pub = p.config.source.publication

    said = change(p, pub)
    p.sql("UPDATE items SET name = name || ' (unseen)' WHERE id <= 5")
    p.sql("INSERT INTO items VALUES (21, 'item 21')")  # the filter lets it by
    p.sql("DELETE FROM items WHERE id = 6")
    p.wait_drained(timeout=120)
    for drift in p.verify():  # the changes never reached the stream
        assert sorted(drift.differing) == ["1", "2", "3", "4", "5"], drift
        assert drift.missing == (["21"] if change is _drop_table else []), drift
        # a delete the stream never carried: its row's last image stays in
        # the compacted topic, which every replay and rebuild writes again
        assert drift.extra == ["6"], drift
    (warning,) = [w for w in _warnings(p) if said in w]
    assert "readside snapshot shelf --from-source" in warning
    again = _said_then_set_again(p, worker, warning, said)
    # the table view's rows again through the stream, after a tombstone for
    # each row gone; the aggregate view's from the source
    loaded = p.run_cli("snapshot", "items", "--from-source")
    said = "rows of public.items gone from the source stood in topic"
    assert f"{said} {p.config.source.topic('public.items')}" in loaded.stderr, loaded
    p.run_cli("snapshot", "shelf", "--from-source")
    wait_for(
        lambda: all(d.ok for d in p.verify()), 180, "the rows read again to arrive"
    )
    p.wait_drained(timeout=120)
    p.assert_converged()
    # a replay of the topic writes what the source holds, the gone row not again
    p.run_cli("snapshot", "items")
    p.assert_converged()
    assert again.alive(), again.tail()


def test_a_connector_changed_by_hand_is_said_and_mended(make_pipeline):
    """Deletes added to the connector's ``skipped.operations`` through Connect's
    REST API, as a UI would: the connector runs on and drops every delete."""
    p, worker = started(make_pipeline, TABLE_VIEW)
    assert _warnings(p) == []
    connect, name = ConnectClient.of(p.config.connect), p.config.connect.connector

    def state() -> str:
        return str(
            connect.request("GET", f"/connectors/{name}/status")["connector"]["state"]
        )

    # Stopped (its task shut down) while the config changes, so the delete
    # below meets the task of the new config.
    connect.request("PUT", f"/connectors/{name}/stop")
    wait_for(lambda: state() == "STOPPED", 60, "the connector to stop")
    live = connect.request("GET", f"/connectors/{name}/config")
    connect.request(
        "PUT", f"/connectors/{name}/config", {**live, "skipped.operations": "t,d"}
    )
    p.sql("DELETE FROM items WHERE id = 6")
    p.sql("UPDATE items SET name = 'seen' WHERE id = 7")
    connect.request("PUT", f"/connectors/{name}/resume")
    wait_for(
        lambda: [d.differing for d in p.verify()] == [[]], 120, "the update to arrive"
    )
    (drift,) = p.verify()
    assert drift.extra == ["6"], drift  # the delete was skipped
    said = f"connector {name} is not as readside set it: skipped.operations 't,d'"
    (warning,) = _warnings(p)
    assert warning.startswith(said + " (readside sets 't')"), warning
    again = _said_then_set_again(p, worker, warning, said)
    p.run_cli("snapshot", "items", "--from-source")
    wait_for(lambda: all(d.ok for d in p.verify()), 180, "the gone row to leave")
    p.wait_drained(timeout=120)
    p.assert_converged()
    assert again.alive(), again.tail()


def test_a_key_the_table_still_holds_gets_no_tombstone(
    make_pipeline, monkeypatch, caplog
):
    """The tombstones of rows gone from the source are asked of the table once
    more, by PostgreSQL's own comparison, before they are written: with an id
    mapping that never meets the stream's (as a key type readside read two
    ways would give), only the row really gone gets one."""
    p, worker = started(make_pipeline, TABLE_VIEW)
    _drop_table(p, p.config.source.publication)
    p.sql("DELETE FROM items WHERE id = 6")
    topic = p.config.source.topic("public.items")
    ends = p.high_watermarks()
    monkeypatch.setattr(gone, "_source_ids", lambda *_a: set())
    found = gone.tombstone_gone(p.config, ["public.items"])
    assert [g.ident for g in found] == ["6"]
    said = "keys of public.items that readside's id did not find in the table"
    assert f"{said} got no tombstone: held by the table after all 19 (" in caplog.text
    after = p.high_watermarks()
    assert sum(after.values()) - sum(ends.values()) == 1, (ends, after)
    assert {t for t, _p in after} == {topic}
    wait_for(lambda: p.verify()[0].extra == [], 120, "the tombstone to be applied")
    (drift,) = p.verify()  # the other rows' documents stay
    assert drift.missing == drift.differing == [], drift
    assert worker.alive(), worker.tail()
