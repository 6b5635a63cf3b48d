"""Focus switching against the real stack: two focuses of one aggregate view
live in their own stores; a site bound to focus A (read client and HTTP key)
never sees focus B's documents; widening and narrowing A's ``where`` with
``readside focus apply`` leaves A's stores holding exactly the new slice, and
B's stores are not touched."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import Any

import pytest
from apiserver import start_server
from harness import REPO, wait_for
from items_model import status_warnings

from pipeline.snapshot.state import SnapshotLog, SnapshotState, focus_key
from pipeline.status import render, snapshots
from pipeline.verify import verify
from pipeline.worker import build_sinks
from query import ReadClient
from query.errors import OutOfFocus

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE customers (
    id      integer PRIMARY KEY,
    name    text NOT NULL,
    country text
);
CREATE TABLE orders (
    id          integer PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    total       integer NOT NULL
);
ALTER TABLE orders REPLICA IDENTITY FULL;
INSERT INTO customers
SELECT i, 'customer ' || i, (ARRAY['DE', 'FR', 'US', 'JP', NULL])[i % 5 + 1]
FROM generate_series(1, 40) AS i;
INSERT INTO orders SELECT i, i % 40 + 1, i * 3 FROM generate_series(1, 60) AS i;
"""
VIEWS: dict[str, Any] = {
    "customers": {
        "kind": "aggregate",
        "table": "public.customers",
        # Redis and Elasticsearch only: FerretDB (the MongoDB stand-in) takes
        # 20-40 ms per update of an existing document, and the code path is
        # the same for every sink.
        "sinks": ["redis", "elasticsearch"],
        "embed": {
            "orders": {
                "children": "public.orders",
                "on": {"customer_id": "id"},
                "order_by": ["id"],
            }
        },
    }
}
EU = "country IN ('DE', 'FR')"
EU_WIDE = "country IN ('DE', 'FR', 'JP') OR country IS NULL"
EU_NARROW = "country = 'DE'"
FOCUSES = {
    "eu": {"view": "customers", "where": EU},
    "us": {"view": "customers", "where": "country = 'US'"},
}
KEY = "eu-site-key-0123456789"


def _ids(p: Any, where: str) -> set[str]:
    return {str(r[0]) for r in p.sql(f"SELECT id FROM customers WHERE {where}")}


def _held(p: Any, view: str) -> dict[str, set[str]]:
    sinks = build_sinks(p.config, ["redis", "elasticsearch"])
    out = {}
    for name, sink in sinks.items():
        sink.open()
        try:
            out[name] = sink.ids(view)
        finally:
            sink.close()
    return out


def _versions(p: Any, view: str, ids: set[str]) -> dict[str, dict[str, int]]:
    sinks = build_sinks(p.config, ["redis", "elasticsearch"])
    out = {}
    for name, sink in sinks.items():
        sink.open()
        try:
            out[name] = {i: s.version for i, s in sink.fetch(view, sorted(ids)).items()}
        finally:
            sink.close()
    return out


def _apply(p: Any, focus: str) -> tuple[int, dict[str, int]]:
    """Run `readside focus apply` as an operator would; (backfilled, purged)."""
    run = subprocess.run(
        [
            *(sys.executable, "-m", "pipeline.cli", "--config", str(p.config_path)),
            *("focus", "apply", focus, "--chunk-size", "7"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    m = re.search(r"backfilled: (\d+) documents; purged: (.*)", run.stdout)
    assert m, run.stdout
    purged = dict((s, int(n)) for s, n in re.findall(r"(\w+)=(\d+)", m.group(2)))
    return int(m.group(1)), purged


def _switch(p: Any, where: str) -> None:
    """Edit eu's where, restart the worker with the new config (the order the
    docs/operations.md asks for: config, workers, then apply)."""

    def edit(data: dict[str, Any]) -> None:
        eu = data["focuses"]["eu"]
        # the definitions applied before: apply backfills only what is new
        eu["previous"] = [eu["where"], *eu.get("previous", [])]
        eu["where"] = where

    p.rewrite(edit)
    for w in p.workers:
        assert w.terminate() == 0, w.tail()
    p.start_worker()


def _assert_exact(p: Any, view: str, where: str) -> None:
    drifts = verify(p.config, views=[view])
    assert all(d.ok for d in drifts), "\n".join(d.describe() for d in drifts)
    want = _ids(p, where)
    assert want
    assert _held(p, view) == {"redis": want, "elasticsearch": want}


def test_focus_sites_isolated_and_switching_adds_and_purges_exactly(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.customers", "public.orders"], VIEWS)
    p.rewrite(lambda d: d.update(focuses=FOCUSES))
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    # A first apply records the definition (a full load: the stream already
    # wrote the same documents, so the load changes nothing).
    backfilled, purged = _apply(p, "eu")
    assert backfilled == len(_ids(p, EU))
    assert purged == {"redis": 0, "elasticsearch": 0}
    _assert_exact(p, "customers.eu", EU)
    _assert_exact(p, "customers.us", "country = 'US'")
    us_ids = _ids(p, "country = 'US'")
    us_before = _versions(p, "customers.us", us_ids)

    # A site bound to eu: its reads are answered from eu's stores only.
    eu_ids = _ids(p, EU)
    every = [str(i) for i in range(1, 41)]
    with ReadClient(p.config, focus="eu") as site:
        got = site.get_many("customers", every)
        assert got.view == "customers.eu"
        assert set(got.docs) == eu_ids
        assert site.get("customers", sorted(us_ids)[0]).doc is None
        with pytest.raises(OutOfFocus):
            site.get("customers.us", sorted(us_ids)[0])
    server = start_server(
        p, {"keys": [{"name": "eu", "key": KEY, "views": ["customers"], "focus": "eu"}]}
    )
    try:
        with server.client(headers={"X-Api-Key": KEY}) as http:
            resp = http.post("/v1/views/customers/mget", json={"ids": every})
            assert resp.status_code == 200, resp.text
            assert set(resp.json()["docs"]) == eu_ids
            assert resp.json()["view"] == "customers.eu"
            for path in (
                "/v1/views/customers.us/docs/3",
                "/v1/views/customers.us/mget",
            ):
                resp = http.request(
                    "POST" if path.endswith("mget") else "GET",
                    path,
                    json={"ids": every} if path.endswith("mget") else None,
                )
                assert resp.status_code == 403, resp.text
                assert resp.json()["reason"] == "focus"
    finally:
        server.stop()

    # Widen: exactly the newly included roots are loaded. Until the apply,
    # status says the stores hold the former slice, and the way out.
    assert status_warnings(p, "definition_warnings") == []
    _switch(p, EU_WIDE)
    assert sorted(status_warnings(p, "definition_warnings")) == [
        f"view customers.eu in sink {sink}: its definition changed (where) since "
        "its documents were written whole; the document of every row that has "
        "not changed since follows the former one. Rewrite them: readside focus "
        "apply eu"
        for sink in ("elasticsearch", "redis")
    ]
    backfilled, purged = _apply(p, "eu")
    assert status_warnings(p, "definition_warnings") == []
    assert backfilled == len(_ids(p, EU_WIDE)) - len(eu_ids)
    assert purged == {"redis": 0, "elasticsearch": 0}
    _assert_exact(p, "customers.eu", EU_WIDE)

    # Narrow: exactly the excluded documents are deleted from every store.
    _switch(p, EU_NARROW)
    backfilled, purged = _apply(p, "eu")
    gone = len(_ids(p, EU_WIDE)) - len(_ids(p, EU_NARROW))
    assert backfilled == 0
    assert purged == {"redis": gone, "elasticsearch": gone}
    _assert_exact(p, "customers.eu", EU_NARROW)

    # `readside status` lists the applied focus and the last purge.
    runs = snapshots(p.config)
    assert [r["where"] for r in runs if r["method"] == "focus"] == [EU_NARROW]
    purge = next(r for r in runs if r["method"] == "purge")
    assert (purge["state"], purge["rows"]) == ("done", 2 * gone)
    shown = render(
        {"views": [], "slot_lag_bytes": 0, "dead_letters": 0, "snapshots": runs}
    )
    assert f"focus customers.eu: applied where {EU_NARROW}" in shown

    # A recorded definition the config does not hold (here planted in the
    # snapshot topic by whoever can write it) is never run as SQL: the next
    # apply loads the whole slice. Run, `true` would have backfilled nothing.
    log = SnapshotLog(p.config)
    try:
        log.save(
            SnapshotState(
                "customers.eu", ["elasticsearch", "redis"], "true", "focus", "applied"
            ),
            focus_key("eu"),
        )
    finally:
        log.close()
    backfilled, purged = _apply(p, "eu")
    assert backfilled == len(_ids(p, EU_NARROW))
    assert purged == {"redis": 0, "elasticsearch": 0}
    _assert_exact(p, "customers.eu", EU_NARROW)

    # The other focus was never touched.
    _assert_exact(p, "customers.us", "country = 'US'")
    assert _versions(p, "customers.us", us_ids) == us_before


TABLE_VIEWS: dict[str, Any] = {
    # Redis and Elasticsearch only, as above.
    "flat": {"table": "public.customers", "sinks": ["redis", "elasticsearch"]}
}
#: The same slices as the aggregate test, in the table-view filter language.
FLAT_EU = "country in ['DE', 'FR']"
FLAT_WIDE = "country in ['DE', 'FR', 'JP'] or country == None"
FLAT_NARROW = "country == 'DE'"


def test_table_view_focus_switch_converges_through_the_stream(make_pipeline):
    """A table view's focus apply signals Debezium: every row comes through
    the stream again under the new filter, so the stores end holding exactly
    the new slice (asynchronously: the test waits for it)."""
    p = make_pipeline(SCHEMA, ["public.customers", "public.orders"], TABLE_VIEWS)
    p.rewrite(lambda d: d.update(focuses={"eu": {"view": "flat", "where": FLAT_EU}}))
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    wait_for(
        lambda: (
            _held(p, "flat.eu") == {"redis": _ids(p, EU), "elasticsearch": _ids(p, EU)}
        ),
        120,
        "the initial slice of flat.eu",
    )
    for flat_where, sql_where in ((FLAT_WIDE, EU_WIDE), (FLAT_NARROW, EU_NARROW)):

        def edit(data: dict[str, Any], where: str = flat_where) -> None:
            data["focuses"]["eu"]["where"] = where

        p.rewrite(edit)
        for w in p.workers:
            assert w.terminate() == 0, w.tail()
        p.start_worker()
        p.run_cli("focus", "apply", "eu", timeout=120)
        want = _ids(p, sql_where)
        wait_for(
            lambda want=want: (
                _held(p, "flat.eu") == {"redis": want, "elasticsearch": want}
            ),
            180,
            f"flat.eu to hold exactly {sql_where}",
            interval=1,
        )
        p.wait_drained(timeout=180)
        drifts = verify(p.config, views=["flat.eu"])
        assert all(d.ok for d in drifts), "\n".join(d.describe() for d in drifts)
    # `readside status` lists the last applied definition, signalled.
    applied = [r for r in snapshots(p.config) if r["method"] == "focus"]
    assert len(applied) == 1
    assert FLAT_NARROW in applied[0]["where"]
    assert applied[0]["state"] == "signalled"
