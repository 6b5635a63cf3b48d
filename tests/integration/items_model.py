"""A small table ``items`` read by a table view (``items``) and an aggregate
view (``shelf``) into Redis: for the tests of what is changed by hand beside
a running pipeline (the publication, the connector, a view's definition)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

from harness import Pipeline, WorkerProc, wait_for

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


#: a figure of a warning (bytes, megabytes, seconds, an LSN's parts)
_FIGURE = re.compile(r"\d+(?:\.\d+)?")


def status_warnings(p: Pipeline, key: str) -> list[str]:
    """The warnings ``readside status --json`` lists under ``key``, each of
    which the text of ``readside status`` must show too, in the same words.

    Their figures are not compared: between the two commands the WAL an
    inactive slot keeps grows with whatever else writes to the source (the
    tests running beside this one)."""
    found: list[str] = json.loads(p.run_cli("status", "--json").stdout)[key]
    text = p.run_cli("status").stdout
    shown = _FIGURE.sub("#", text)
    for said in found:
        assert f"warning: {_FIGURE.sub('#', said)}" in shown, text
    return found


def unloaded_loads(p: Pipeline) -> dict[str, str]:
    """The load ``readside status --json`` names for each view not whole."""
    rows = json.loads(p.run_cli("status", "--json").stdout)["views"]
    return {r["view"]: r["unloaded_load"] for r in rows if r["unloaded_since_ms"]}


def reload_whole(
    p: Pipeline, worker: WorkerProc, views: list[str], *how: str
) -> list[subprocess.CompletedProcess[str]]:
    """``readside snapshot VIEW HOW`` for each of ``views``: each must be
    marked whole again in Redis and exact, and status must call it whole,
    with the worker running on."""
    runs = [p.run_cli("snapshot", view, *how, timeout=600) for view in views]
    for view in views:
        p.wait_log(worker, f"view {view} is whole again in sink redis", timeout=60)
    p.wait_drained(timeout=120)
    p.assert_converged()
    wait_for(lambda: unloaded_loads(p) == {}, 30, "status to call the views whole")
    assert worker.alive(), worker.tail()
    return runs
