"""Columns named like the fields a store keeps for itself.

A table moved over from MongoDB keeps its ``_id``; a soft-delete flag may be
``_deleted``. MongoDB keeps ``_id``, ``_v`` and ``_deleted`` in every
document readside writes; Elasticsearch refuses its metadata fields (``_id``
among them) inside a document and keeps ``_deleted`` for tombstones. Such a
column failed far from its cause: the worker died at its start with
Elasticsearch's own "Field [_id] is defined more than once", which names no
view, and MongoDB would have dead-lettered every row; a ``rename`` transform,
the way out, did not help, because the index's mapping came from the columns.

Now the worker refuses such a view at its start (and ``readside config
check`` reports it before), naming the view, the column and the ways out;
a view that renames the columns (a transform, or an aggregate view's
``rename``) converges in every store, and Redis, which keeps none of these
names, holds the columns as they are, a live row with
``_deleted = true`` included.
"""

from __future__ import annotations

from typing import Any

import pytest

from query.client import ReadClient

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE legacy (
    id integer PRIMARY KEY,
    _id text NOT NULL,
    _v integer NOT NULL,
    _deleted boolean NOT NULL,
    name text
);
CREATE TABLE notes (
    id integer PRIMARY KEY,
    legacy_id integer NOT NULL REFERENCES legacy,
    _id text NOT NULL,
    body text
);
ALTER TABLE notes REPLICA IDENTITY FULL;
INSERT INTO legacy
SELECT i, 'oid-' || i, i * 10, i % 3 = 0, 'row ' || i FROM generate_series(1, 30) AS i;
INSERT INTO notes
SELECT i, 1 + i % 30, 'note-oid-' || i, 'note ' || i FROM generate_series(1, 60) AS i;
"""
RENAMED = {"_id": "mongo_id", "_v": "mongo_v", "_deleted": "is_deleted"}
VIEWS: dict[str, Any] = {
    # every store: refused at start (Elasticsearch and MongoDB keep them)
    "legacy": {"table": "public.legacy"},
    "legacy_renamed": {
        "table": "public.legacy",
        "transforms": [{"type": "rename", "fields": RENAMED}],
    },
    "legacy_cached": {"table": "public.legacy", "sinks": ["redis"]},
    "legacy_docs": {
        "kind": "aggregate",
        "table": "public.legacy",
        "rename": RENAMED,
        # a nested level's _id is an ordinary field in every store
        "embed": {"notes": {"children": "public.notes", "on": {"legacy_id": "id"}}},
    },
}


def test_reserved_columns_are_refused_at_start_and_renamed_views_converge(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.legacy", "public.notes"], VIEWS)
    p.apply_connector()

    for sink in ("elasticsearch", "mongodb"):
        text = p.start_worker(views=["legacy"], sinks=[sink]).refused(
            120, f"the {sink} worker refuses view legacy", "no secret here"
        )
        assert "views.legacy: its documents would carry the field '_id'" in text
        assert "views.legacy.exclude: [_id]" in text
        assert "defined more than once" not in text
    # `readside config check` says so before any worker starts: each store once
    check = p.run_cli("config", "check", ok=False, timeout=120)
    assert check.returncode != 0
    assert "defined more than once" not in check.stderr
    refused = [x for x in check.stderr.splitlines() if "views.legacy:" in x]
    assert len(refused) == 2, check.stderr  # Elasticsearch and MongoDB
    assert all("'_id'" in line for line in refused)
    assert not any("legacy_renamed" in x or "legacy_docs" in x for x in refused)

    # Redis keeps none of these names: the same view runs there
    p.rewrite(lambda d: d["views"]["legacy"].update(sinks=["redis"]))
    p.run_cli("config", "check", timeout=120)

    worker = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()

    p.sql("UPDATE legacy SET _deleted = NOT _deleted, _v = _v + 1 WHERE id <= 12")
    p.sql("UPDATE notes SET _id = _id || '-moved' WHERE id % 4 = 0")
    p.sql("INSERT INTO legacy VALUES (31, 'oid-31', 310, true, 'new')")
    p.sql("DELETE FROM notes WHERE legacy_id = 5")
    p.sql("DELETE FROM legacy WHERE id = 5")
    p.wait_drained(timeout=180)
    p.assert_converged()

    # a live row flagged _deleted = true reads as live, with its columns
    with ReadClient(p.config) as client:
        row = client.get("legacy_cached", "15").doc
        assert row is not None
        assert row["_deleted"] is True
        assert row["_id"] == "oid-15"
    with ReadClient(p.config, read_order=["elasticsearch"]) as client:
        renamed = client.get("legacy_renamed", "15").doc
        assert renamed is not None
        assert renamed["is_deleted"] is True
        assert renamed["mongo_id"] == "oid-15"
        assert "_id" not in renamed
    assert worker.alive(), worker.tail()
    assert not p.dead_letters(), "no record may be dead-lettered"
