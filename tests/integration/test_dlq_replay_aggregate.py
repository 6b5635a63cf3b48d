"""``readside dlq replay`` re-reads the roots of aggregate views.

A user transform refuses one customer's document: the change that named it
is dead-lettered and the stores keep the customer's last good document.
Once the transform is fixed, the replay of that dead letter must re-read the
root from the source and write it, so every store equals the SQL definition
again. (A replay that only decoded the record would count it as replayed and
write nothing: the customer would stay stale in every store.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from shop_model import SCHEMA, TABLES, VIEW, ShopLoad, expected_documents

from pipeline import dlq
from pipeline.replay import replay_dead_letters

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent


def test_dlq_replay_aggregate_view_rereads_the_refused_root(make_pipeline):
    view = {
        **VIEW,
        "transforms": [{"type": "python", "path": "test_aggregate_views:picky"}],
    }
    p = make_pipeline(SCHEMA, TABLES, {"customers": view})
    env = {"PYTHONPATH": str(HERE)}
    load = ShopLoad(seed=11)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn, customers=15)
    p.apply_connector()
    worker = p.start_worker(env=env)
    p.wait_drained(timeout=120)
    victim = int(sorted(expected_documents(p.dsn), key=int)[0])
    p.sql("UPDATE customers SET name = 'POISON Ann' WHERE id = %s", (victim,))
    p.wait_drained(timeout=120)
    dead = p.dead_letters()
    assert [r.headers[dlq.H_REASON] for r in dead] == ["transform"]
    assert f"root {victim}:" in dead[0].headers[dlq.H_MESSAGE]

    # The fix: a transform that keeps the document as it is.
    assert worker.terminate() == 0

    def fix(data: dict[str, Any]) -> None:
        data["views"]["customers"]["transforms"] = []

    p.rewrite(fix)
    p.start_worker(env=env)
    p.wait_drained(timeout=120)
    stale = [d for d in p.verify() if d.differing]
    assert stale, "before the replay the refused root holds its old document"

    replayed, failed_again = replay_dead_letters(p.config)
    assert (replayed, failed_again) == (1, 0)
    p.assert_converged()
