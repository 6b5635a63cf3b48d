"""A small table ``items`` read by a table view (``items``) and an aggregate
view (``shelf``) into Redis: for the tests of what is changed by hand beside
a running pipeline (the publication, the connector, a view's definition)."""

from __future__ import annotations

import json
from typing import Any

from harness import Pipeline, WorkerProc

SCHEMA = """
CREATE TABLE items (id integer PRIMARY KEY, name text NOT NULL, price integer);
INSERT INTO items SELECT i, 'item ' || i, i FROM generate_series(1, 20) AS i;
"""
TABLE_VIEW = {"items": {"table": "public.items", "sinks": ["redis"]}}
BOTH_VIEWS = {
    **TABLE_VIEW,
    "shelf": {"kind": "aggregate", "table": "public.items", "sinks": ["redis"]},
}


def started(make_pipeline: Any, views: dict[str, Any]) -> tuple[Pipeline, WorkerProc]:
    """The pipeline of ``views`` over ``items``, converged, with its worker."""
    p = make_pipeline(SCHEMA, ["public.items"], views)
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    p.assert_converged()
    return p, worker


def status_warnings(p: Pipeline, key: str) -> list[str]:
    """The warnings ``readside status --json`` lists under ``key``, each of
    which the text of ``readside status`` must show too."""
    found: list[str] = json.loads(p.run_cli("status", "--json").stdout)[key]
    text = p.run_cli("status").stdout
    for said in found:
        assert f"warning: {said}" in text, text
    return found
