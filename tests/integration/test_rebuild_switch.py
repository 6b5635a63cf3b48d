"""``readside snapshot VIEW --rebuild`` while a writer keeps updating and
deleting the very rows a site reads (issue 9, hole 10).

A site samples every store, all along, and keeps per document the newest
version and content it saw and whether it saw it deleted. From the switch on
it reads the new generation, which must already hold everything the live one
held: no version may go back, no counter may go back, and no deleted
document may come back. At the end every store equals the source (the
oracle).
"""

from __future__ import annotations

import threading
from typing import Any

import psycopg
import pymongo
import pytest
from harness import SINKS, BackgroundLoad, wait_for
from test_sink_generations import Rig, rig  # noqa: F401 (the fixture)

from connectors.base import Generations, Stored
from pipeline.errors import TransientError
from pipeline.events import Delete, Upsert
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE items (
    id  integer PRIMARY KEY,
    n   integer NOT NULL,
    pad text NOT NULL
);
"""
TABLES = ["public.items"]
VIEWS = {
    "flat": {"table": "public.items"},
    "agg": {"kind": "aggregate", "table": "public.items"},
}
#: the rows the site reads; the writer only ever increments ``n`` (so a
#: smaller ``n`` is an older state) and deletes some for good
WATCHED = list(range(1, 151))
DELETABLE = set(WATCHED[:75])


def _step(conn: psycopg.Connection[Any], rng: Any) -> None:
    """Increment a watched row's counter, now and then delete one for good."""
    row = rng.choice(WATCHED)
    if row in DELETABLE and rng.random() < 0.04:
        conn.execute("DELETE FROM items WHERE id = %s", (row,))
    else:
        conn.execute("UPDATE items SET n = n + 1 WHERE id = %s", (row,))


class History(threading.Thread):
    """A site sampling the watched documents of every store and view; it
    checks per document that what it sees never goes back in time."""

    def __init__(self, p: Any, views: list[str]) -> None:
        super().__init__(daemon=True)
        self.sinks = build_sinks(p.config, list(SINKS))
        self.views = views
        self.ids = [str(i) for i in WATCHED]
        #: (sink, view, id) -> (newest version seen, newest n seen or None
        #: once the document was seen deleted)
        self.seen: dict[tuple[str, str, str], tuple[int, int | None]] = {}
        self.violations: list[str] = []
        self.errors: list[str] = []
        self.generations: set[tuple[str, str, int]] = set()
        self.reads = 0
        self.outages = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for name, sink in self.sinks.items():
                assert isinstance(sink, Generations)
                for view in self.views:
                    try:
                        gen = sink.generation(view)
                        got = sink.fetch(view, self.ids)
                    except TransientError:
                        # a store restarted by someone else on the shared
                        # stack: a site retries; what it reads is checked
                        self.outages += 1
                        continue
                    except Exception as exc:
                        self.errors.append(f"{name}/{view}: {exc!r}")
                        continue
                    self.reads += 1
                    self.generations.add((name, view, gen))
                    for doc_id in self.ids:
                        self._check(name, view, doc_id, gen, got.get(doc_id))

    def _check(
        self, sink: str, view: str, doc_id: str, gen: int, got: Stored | None
    ) -> None:
        key = (sink, view, doc_id)
        version = -1 if got is None else got.version
        n = None if got is None or got.doc is None else int(got.doc["n"])
        before = self.seen.get(key)
        if before is None:
            self.seen[key] = (version, n)
            return
        old_version, old_n = before
        where = f"{sink}/{view} id={doc_id} generation={gen}"
        if old_n is None and n is not None:
            self.violations.append(f"{where}: deleted, then back with n={n}")
        elif version >= 0 and version < old_version:
            self.violations.append(f"{where}: version {old_version} -> {version}")
        elif n is not None and old_n is not None and n < old_n:
            self.violations.append(f"{where}: n {old_n} -> {n}")
        deleted = old_n is None or n is None
        newest_n = None if deleted else max(n, old_n)  # type: ignore[type-var]
        self.seen[key] = (max(version, old_version), newest_n)

    def stop(self) -> None:
        self._halt.set()
        self.join(60)
        for sink in self.sinks.values():
            sink.close()


def _rebuild(p: Any, view: str, env: dict[str, str]) -> str:
    done = p.run_cli(
        "snapshot", view, "--rebuild", "--chunk-size", "50", timeout=600, env=env
    )
    return done.stderr


def test_rebuild_switch_never_goes_back_in_time_under_updates_and_deletes(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO items (id, n, pad) SELECT i, 0, repeat('x', 200) "
            "FROM unnest(%s::int[]) AS i",
            (WATCHED,),
        )
    p.apply_connector()
    p.start_worker()
    # A long topic: the table view's catch-up replays it from its start, so
    # the writer's changes keep arriving while the catch-up runs.
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(60):
            conn.execute("UPDATE items SET n = n + 1")
    p.wait_drained(timeout=240)
    wait_for(lambda: all(d.ok for d in p.verify()), 120, "the initial load")

    site = History(p, list(VIEWS))
    site.start()
    with BackgroundLoad(p.dsn, _step, seed=7, pause_s=0.002) as writer:
        writer.wait_ops(50)
        _rebuild(p, "flat", {})
        writer.wait_ops(50)
        # Every re-read of the aggregate catch-up is held a while, so its
        # catch-up trails the writer by many changes.
        _rebuild(p, "agg", {"READSIDE_FAULT_REREAD_DELAY_MS": "150"})
        writer.wait_ops(50)
        deleted = (
            len(DELETABLE)
            - p.sql("SELECT count(*) FROM items WHERE id <= %s", (max(DELETABLE),))[0][
                0
            ]
        )
    p.wait_drained(timeout=240)
    site.stop()

    assert not site.errors, site.errors[:5]
    assert site.reads > 50
    assert deleted > 0  # the writer did delete watched rows meanwhile
    for name in SINKS:
        for view in VIEWS:
            # the site's reads spanned the switch of every store and view
            assert {(name, view, 1), (name, view, 2)} <= site.generations
    # FerretDB 1.24 (the local MongoDB stand-in) does not apply a guarded
    # update atomically: two writers of one document at once (the mirror and
    # the catch-up both write the new generation) can leave the older one
    # stored (the fault suite's probe: 63 lost of 200 concurrent pairs). Real
    # MongoDB updates one document atomically, so the rule holds there; on
    # FerretDB its reads are reported, not asserted, and its final state must
    # still equal the source.
    stand_in = _is_ferretdb(p)
    held = [v for v in site.violations if not (stand_in and v.startswith("mongodb/"))]
    if len(held) < len(site.violations):
        print(f"FerretDB reads that went back: {len(site.violations) - len(held)}")
    assert not held, f"{len(held)} reads went back in time, first: {held[:8]}"
    p.assert_converged()


def _is_ferretdb(p) -> bool:
    """Whether the pipeline's MongoDB is FerretDB (its buildInfo says so)."""
    uri = p.config.sinks["mongodb"].uri.get_secret_value()
    with pymongo.MongoClient(uri) as client:
        return "ferretdbVersion" in client.admin.command("buildInfo")


def test_live_writes_mirrored_into_the_new_generation_until_the_switch(
    rig: Rig,  # noqa: F811 (the fixture)
) -> None:
    """Each store: from ``create_generation`` on, a live write lands in the new
    generation too (a sink opened before it included), and the switch ends
    the mirroring atomically."""
    view = "orders"
    live, early = rig.sink(), rig.sink()
    assert isinstance(live, Generations)
    assert live.write([Upsert(view, "a", 10, {"n": 1})]).applied == 1
    early.fetch(view, ["a"])  # a Redis sink caches the generations it saw
    live.create_generation(view, 2)
    pinned = rig.pinned(live, 2)
    assert pinned.ids(view) == set()

    result = early.write([Upsert(view, "a", 11, {"n": 2}), Delete(view, "b", 11)])
    assert (result.applied, result.rejected) == (2, [])
    both = {"a": Stored(11, {"n": 2}), "b": Stored(11, None)}
    assert pinned.fetch(view, ["a", "b"]) == both
    assert live.fetch(view, ["a", "b"]) == both  # still generation 1
    assert live.generation(view) == 1

    live.switch_generation(view, 2)
    result = early.write([Upsert(view, "a", 12, {"n": 3})])
    assert (result.applied, result.rejected) == (1, [])
    assert live.fetch(view, ["a"]) == {"a": Stored(12, {"n": 3})}
    live.drop_generation(view, 1)
    assert not rig.storage_exists(live, 1)
    assert early.write([Upsert(view, "c", 13, {"n": 1})]).applied == 1
    assert not rig.storage_exists(live, 1)  # nothing wrote the old one again
    assert pinned.ids(view) == {"a", "c"}
