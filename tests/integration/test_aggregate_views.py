"""Aggregate views against the real stack: a three-level document with a
many-to-one lookup and a many-to-many list stays equal to the source under a
random workload on every level, with two workers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pymongo
import pytest
from elasticsearch import Elasticsearch
from harness import REPO
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad, expected_documents

from pipeline import dlq
from pipeline.aggregate import AggregateView, prepare_views
from pipeline.aggregate.reader import Reader
from pipeline.verify import canonical
from pipeline.views import build_views

pytestmark = pytest.mark.integration


def _view_sql_documents(p: Any) -> dict[str, str]:
    views = build_views(p.config, only=["customers"])
    prepare_views(views, p.dsn)
    view = views["customers"]
    assert isinstance(view, AggregateView)
    reader = Reader(p.dsn)
    try:
        return {k: canonical(v) for k, v in view.documents(reader).items()}
    finally:
        reader.close()


def test_aggregate_random_workload_two_workers_converges(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    load = ShopLoad(seed=7)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn)
    p.apply_connector()
    p.start_worker()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(400):
            load.step(conn, load.rng)
    p.wait_drained(timeout=180)
    oracle = expected_documents(p.dsn)
    assert len(oracle) > 10
    # The view's SQL defines the same documents as plain reads assembled by hand...
    assert _view_sql_documents(p) == oracle
    # ...and every sink holds exactly those.
    p.assert_converged()
    assert not p.dead_letters()


def _verify_cli(p: Any, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.cli",
            "--config",
            str(p.config_path),
            "verify",
            "customers",
            *args,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_verify_finds_hand_corrupted_documents_and_repair_fixes_them(make_pipeline):
    p = make_pipeline(SCHEMA, TABLES, {"customers": VIEW})
    load = ShopLoad(seed=3)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=30)
    p.apply_connector()
    p.start_worker()
    p.wait_drained(timeout=180)
    clean = _verify_cli(p)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "missing=0 extra=0 differing=0" in clean.stdout
    ids = sorted(expected_documents(p.dsn), key=int)
    wrong, gone = ids[0], ids[1]
    cfg = p.config
    # By hand, in each store: a changed body, a lost document, an extra one.
    prefix = cfg.views["customers"].sink_options["redis"].target
    r = cfg.sinks["redis"].connect()  # type: ignore[union-attr]
    r.set(f"{prefix}:{wrong}", json.dumps({"id": int(wrong), "full_name": "x"}))
    mongo = cfg.sinks["mongodb"]
    with pymongo.MongoClient(mongo.uri.get_secret_value()) as client:
        client[mongo.database]["customers"].delete_one({"_id": gone})
    es = Elasticsearch(cfg.sinks["elasticsearch"].hosts)
    index = f"{cfg.sinks['elasticsearch'].index_prefix}customers"
    es.index(index=index, id="999999", document={"id": 999999}, refresh=True)
    drift = _verify_cli(p)
    assert drift.returncode == 1
    assert f"missing (first): ['{gone}']" in drift.stdout
    assert "extra (first): ['999999']" in drift.stdout
    assert f"  {wrong}: expected" in drift.stdout
    fixed = _verify_cli(p, "--repair")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert fixed.stdout.count("after repair:") == 3
    p.assert_converged()


def picky(doc: dict[str, Any]) -> dict[str, Any]:
    """A user transform with a bug: it raises on one customer's name."""
    if "POISON" in doc["full_name"]:
        raise ValueError("cannot handle POISON")
    return doc


def test_aggregate_transform_raising_dead_letters_the_change_and_moves_on(
    make_pipeline,
):
    view = {**VIEW, "transforms": [{"type": "python", "path": f"{__name__}:picky"}]}
    p = make_pipeline(SCHEMA, TABLES, {"customers": view})
    load = ShopLoad(seed=5)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=20)
    p.apply_connector()
    p.start_worker(env={"PYTHONPATH": str(Path(__file__).resolve().parent)})
    p.wait_drained(timeout=120)
    victim = int(sorted(expected_documents(p.dsn), key=int)[0])
    p.sql("UPDATE customers SET name = 'POISON' WHERE id = %s", (victim,))
    # Drained before more changes: a later change in the same batch could
    # delete or ban the victim, and its root would then never be transformed.
    p.wait_drained(timeout=120)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(30):
            load.step(conn, load.rng)
    p.wait_drained(timeout=120)
    dead = p.dead_letters()
    assert dead, "the refused root was not dead-lettered"
    # Each re-read of the poisoned root (its own change, or a later change to
    # one of its orders or tags) dead-letters a change of that batch.
    for rec in dead:
        assert rec.headers[dlq.H_VIEW] == "customers"
        assert rec.headers[dlq.H_REASON] == "transform"
        assert f"root {victim}:" in rec.headers[dlq.H_MESSAGE]
        assert rec.origin[0] in p.view_topics()
    # Every other document follows the source. The refused root keeps its last
    # good version in every sink; the oracle, which runs the same transform,
    # defines no document for it, so verify lists it as extra (unless the
    # load deleted that customer meanwhile).
    for d in p.verify():
        assert d.missing == [], d.describe()
        assert d.differing == [], d.describe()
        assert d.extra in ([], [str(victim)]), d.describe()
    assert p.workers[0].alive()
