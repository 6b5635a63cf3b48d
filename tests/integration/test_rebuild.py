"""``readside snapshot VIEW --rebuild`` while a writer keeps changing the source
and a site keeps reading: a new generation is filled beside the live one,
switched in, and the old one dropped; no read ever misses a document, a
killed rebuild goes on from where it was, and every store ends equal to the
source."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from typing import Any

import psycopg
import pymongo
import pytest
from harness import REPO, BackgroundLoad, wait_for
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad

from connectors.base import Generations
from pipeline.snapshot.state import SnapshotLog, SnapshotState, rebuild_key
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

#: Customers the writer can neither delete nor change (rules below): their
#: documents exist during the whole test, so a site must always find them.
WATCHED = list(range(900_001, 900_031))
PROTECT = """
CREATE RULE keep_watched_del AS ON DELETE TO customers
    WHERE old.id >= 900000 DO INSTEAD NOTHING;
CREATE RULE keep_watched_upd AS ON UPDATE TO customers
    WHERE old.id >= 900000 DO INSTEAD NOTHING;
"""
VIEWS = {"customers": VIEW, "flat": {"table": "public.customers"}}
SINKS = ["redis", "elasticsearch", "mongodb"]


def _rebuild(p: Any, view: str, *args: str) -> list[str]:
    return p.cli_args("snapshot", view, "--rebuild", *args)


def _run(
    p: Any, view: str, *args: str, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The rebuild of ``view``; with ``fault`` (a fault-injection setting) it
    must die as ``kill -9`` would, else succeed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if fault is not None:
        name, value = fault.split("=")
        env[name] = value
    done = subprocess.run(
        _rebuild(p, view, *args),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,  # FerretDB (the local MongoDB) takes most of it
        env=env,
    )
    assert done.returncode == (0 if fault is None else 137), done.stdout + done.stderr
    return done


def _state(p: Any, view: str) -> SnapshotState | None:
    return SnapshotLog(p.config).read().get(rebuild_key(view, SINKS))


class Reader(threading.Thread):
    """A site reading the watched documents through every sink, all along."""

    def __init__(self, p: Any, views: list[str]) -> None:
        super().__init__(daemon=True)
        self.sinks = build_sinks(p.config, SINKS)
        self.views = views
        self.ids = [str(i) for i in WATCHED]
        self.reads = 0
        self.misses: list[str] = []
        self.errors: list[str] = []
        self.generations: set[tuple[str, str, int]] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            for name, sink in self.sinks.items():
                for view in self.views:
                    try:
                        got = sink.fetch(view, self.ids)
                        assert isinstance(sink, Generations)
                        self.generations.add((name, view, sink.generation(view)))
                    except Exception as exc:
                        self.errors.append(f"{name}/{view}: {exc!r}")
                        continue
                    self.reads += 1
                    missing = [
                        i for i in self.ids if got.get(i) is None or not got[i].doc
                    ]
                    if missing:
                        self.misses.append(f"{name}/{view}: {missing[:5]}")
            time.sleep(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(30)
        for sink in self.sinks.values():
            sink.close()


def _old_storage(p: Any, view: str) -> dict[str, int]:
    """How much generation 1 of ``view`` still holds in each store."""
    cfg = p.config
    rcfg, mcfg = cfg.sinks["redis"], cfg.sinks["mongodb"]
    prefix = f"it{p.suffix}:{view}"
    with rcfg.connect() as r:  # type: ignore[union-attr]
        keys = sum(1 for _ in r.scan_iter(match=f"{prefix}:*", count=1000))
        keys += sum(1 for _ in r.scan_iter(match=f"{prefix}#*", count=1000))
    sinks = build_sinks(cfg, ["elasticsearch"])
    es: Any = sinks["elasticsearch"]
    index = f"{es.alias(view)}-000001"
    es_count = 1 if es.client.indices.exists(index=index) else 0
    es.close()
    with pymongo.MongoClient(mcfg.uri.get_secret_value()) as client:  # type: ignore[union-attr]
        names = client[mcfg.database].list_collection_names()  # type: ignore[union-attr]
    return {"redis": keys, "elasticsearch": es_count, "mongodb": int(view in names)}


def _generations(p: Any, view: str) -> dict[str, int]:
    out = {}
    for name, sink in build_sinks(p.config, SINKS).items():
        assert isinstance(sink, Generations)
        sink.open()
        out[name] = sink.generation(view)
        sink.close()
    return out


def _started(
    make_pipeline: Any, views: dict[str, Any], seed: int, watched: bool = True
) -> tuple[Any, ShopLoad]:
    """A pipeline of ``views`` over 250 customers (and the :data:`WATCHED`
    ones, kept by rules), its worker running, every store loaded."""
    p = make_pipeline(SCHEMA + PROTECT if watched else SCHEMA, TABLES, views)
    load = ShopLoad(seed=seed)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=250)
        with conn.transaction():
            for cid in WATCHED if watched else []:
                conn.execute(
                    "INSERT INTO customers (id, name, tier) VALUES (%s, %s, 'gold')",
                    (cid, f"watched {cid}"),
                )
    p.apply_connector()
    p.start_worker()
    # Debezium's initial snapshot may still be running when the first drain
    # looks at the topics' ends, so wait for the stores to hold the source.
    wait_for(lambda: all(d.ok for d in p.verify()), 240, "the initial load", interval=2)
    return p, load


def _popen(args: list[str]) -> subprocess.Popen[str]:
    """A command started in the background, its output (both streams) piped."""
    return subprocess.Popen(
        args,
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_rebuild_switches_without_a_missed_read_and_converges(make_pipeline):
    p, load = _started(make_pipeline, VIEWS, seed=21)
    assert _generations(p, "customers") == dict.fromkeys(SINKS, 1)

    # Drift by hand in generation 1: a rebuild reads the source, not the store.
    drifted = str(WATCHED[0])
    with p.config.sinks["redis"].connect() as r:  # type: ignore[union-attr]
        r.set(f"it{p.suffix}:customers:{drifted}", '{"full_name": "wrong"}')
    assert any(not d.ok for d in p.verify())

    reader = Reader(p, ["customers", "flat"])
    reader.start()
    with BackgroundLoad(p.dsn, load.step, seed=22, pause_s=0.05) as writer:
        writer.wait_ops(20)
        # Killed (as by kill -9) right after its 6th chunk was recorded.
        _run(
            p,
            "customers",
            "--chunk-size",
            "10",
            fault="READSIDE_FAULT_CRASH_AFTER_CHUNKS=6",
        )
        killed = _state(p, "customers")
        assert killed is not None
        assert killed.state == "running"
        assert killed.phase == "fill"
        assert killed.rows == 60
        assert killed.generation == 2
        # Killed before the switch: sites still read generation 1.
        assert _generations(p, "customers") == dict.fromkeys(SINKS, 1)
        second = _run(p, "customers", "--chunk-size", "50")
        # The second run went on from the killed run's last recorded chunk.
        assert f"phase=fill rows_done={killed.rows} " in second.stderr
        assert "generation 2" in second.stdout
        # A table view: its topic replayed from the start into generation 2,
        # killed right after its switch; the next run catches up and drops.
        _run(p, "flat", fault="READSIDE_FAULT_CRASH_AFTER_SWITCH=1")
        at_crash = _state(p, "flat")
        assert at_crash is not None
        assert at_crash.phase == "switched"
        assert _generations(p, "flat") == dict.fromkeys(SINKS, 2)
        assert "resuming rebuild" in _run(p, "flat").stderr
        writer.wait_ops(30)
    reader.stop()

    done = _state(p, "customers")
    assert done is not None
    assert done.state == "done"
    assert done.phase == "done"
    counts = done.counts or {}
    assert counts["fill"] >= (killed.total or 0) - 30
    for view in ("customers", "flat"):
        assert _generations(p, view) == dict.fromkeys(SINKS, 2)
        assert _old_storage(p, view) == dict.fromkeys(SINKS, 0)
    p.wait_drained(timeout=240)
    p.assert_converged()  # every document of both views, in every store

    assert not reader.errors, reader.errors[:5]
    assert not reader.misses, reader.misses[:5]
    assert reader.reads > 100
    for name in SINKS:
        for view in ("customers", "flat"):
            # The site read both generations: its reads spanned the switches.
            assert (name, view, 1) in reader.generations
            assert (name, view, 2) in reader.generations


def test_rebuilds_of_a_view_started_beside_a_running_one_are_refused(make_pipeline):
    """An operator starts ``readside snapshot customers --rebuild`` while
    another run of it goes on: from a second terminal, or a job scheduler
    that started it again (it would resume the first's record), and with
    ``--restart``, taking the first for stuck. Sites must never miss a
    document and every store must end equal to the source, whichever run
    gets where first."""
    p, load = _started(make_pipeline, {"customers": VIEW}, seed=31)
    reader = Reader(p, ["customers"])
    reader.start()
    args = _rebuild(p, "customers", "--chunk-size", "10")
    with BackgroundLoad(p.dsn, load.step, seed=32, pause_s=0.05) as writer:
        writer.wait_ops(20)
        runs = [_popen(args)]
        time.sleep(1.5)  # the first is filling when the others start
        runs += [_popen(args), _popen([*args, "--restart"])]
        outs = [r.communicate(timeout=900)[0] for r in runs]
        writer.wait_ops(30)
    reader.stop()
    # One run did the rebuild; the others stopped at once, naming it. Before
    # the runs took a lock, a second run made generation 2 again (dropping
    # what the first had filled), and with --restart Elasticsearch ended
    # with documents missing for good.
    done = [out for r, out in zip(runs, outs, strict=True) if r.returncode == 0]
    refused = [out for r, out in zip(runs, outs, strict=True) if r.returncode == 2]
    assert len(done) == 1, outs
    assert len(refused) == 2, outs
    assert "rebuild customers done: generation 2" in done[0]
    for out in refused:
        assert (
            "another `readside snapshot customers --rebuild` is running into sinks."
            in out
        ), out
        assert "(readside rebuild customers pid " in out, out
    assert _generations(p, "customers") == dict.fromkeys(SINKS, 2)
    p.wait_drained(timeout=240)
    p.assert_converged()
    assert not reader.errors, reader.errors[:5]
    assert not reader.misses, reader.misses[:5]


def test_a_rebuild_whose_lock_session_ended_takes_its_locks_again(make_pipeline):
    """A restart of PostgreSQL ends the session that holds a rebuild's locks
    (here: the session is terminated mid-fill, as a restart would). The run
    must notice before its next step, take them again, and finish; a second
    run must still be refused after that."""
    p, _load = _started(make_pipeline, {"customers": VIEW}, seed=41, watched=False)
    run = _popen(_rebuild(p, "customers", "--chunk-size", "10"))
    sessions = (
        "SELECT pid FROM pg_stat_activity "
        "WHERE application_name LIKE 'readside rebuild customers pid %%'"
    )
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        wait_for(lambda: conn.execute(sessions).fetchall(), 60, "the lock session")
        (pid,) = conn.execute(sessions).fetchone() or (None,)
        conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        # taken again by the same run, in a new session: a second run is refused
        wait_for(
            lambda: [r for r in conn.execute(sessions).fetchall() if r[0] != pid],
            120,
            "the locks taken again",
        )
        second = subprocess.run(
            _rebuild(p, "customers"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
    out = run.communicate(timeout=900)[0]
    assert run.returncode == 0, out
    assert "the session that holds the rebuild's locks ended" in out
    assert "rebuild customers done: generation 2" in out
    assert second.returncode == 2, second.stdout + second.stderr
    assert "--rebuild` is running into sinks." in second.stderr
    assert _generations(p, "customers") == dict.fromkeys(SINKS, 2)
    p.wait_drained(timeout=240)
    p.assert_converged()
