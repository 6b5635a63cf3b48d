"""readside's publication changed by hand while the connector runs: a table
dropped from it, or a row filter added. PostgreSQL leaves those changes out
of the stream without an error, the connector and its heartbeats go on, and
the views stay as they were while their lag reads zero.

The worker (at its start) and ``readside status`` must say what the
publication leaves out and the way back; ``readside connector apply`` must
publish the tables whole again, and the snapshot it names must bring the
changes the stream never carried (pipeline.publication,
connectors.postgres.publication_problems).
"""

from __future__ import annotations

import json

import pytest
from harness import Pipeline, wait_for

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL);
INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 20) AS i;
"""


def _warnings(p: Pipeline) -> list[str]:
    """What ``readside status`` warns of the capture, in JSON and text alike."""
    found = json.loads(p.run_cli("status", "--json").stdout)["slot_warnings"]
    text = p.run_cli("status").stdout
    for said in found:
        assert f"warning: {said}" in text, text
    return found


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
    views = {
        "items": {"table": "public.items", "sinks": ["redis"]},
        "shelf": {"kind": "aggregate", "table": "public.items", "sinks": ["redis"]},
    }
    p = make_pipeline(SCHEMA, ["public.items"], views)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
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
    assert "readside connector apply" in warning
    assert "readside snapshot items --from-source" in warning
    assert "readside snapshot shelf --from-source" in warning

    assert worker.terminate() == 0
    again = p.start_worker()
    p.wait_log(again, f"ERROR pipeline.publication source: {said}", timeout=60)

    p.run_cli("connector", "apply")
    assert _warnings(p) == []
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
