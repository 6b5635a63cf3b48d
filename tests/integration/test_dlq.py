"""Poison records go to the dead-letter topic; a replay applies them once fixed.

Four kinds of bad record: bytes that are not JSON and JSON that is not a
Debezium envelope (produced straight into the view's topic), a row a user
transform raises on, and a row Elasticsearch refuses (``code`` is mapped as
``integer``). Valid records around them are applied. After the causes are
fixed (a transform that no longer raises, the row corrected),
``replay_dead_letters`` applies what can be applied and ``verify()`` reports
no drift.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import elasticsearch
import pytest
from confluent_kafka import Producer
from harness import REPO, Pipeline

from pipeline import dlq
from pipeline.replay import replay_dead_letters

pytestmark = pytest.mark.integration

POISON = "POISON"
SCHEMA = """
CREATE TABLE products (
    id   integer PRIMARY KEY,
    name text NOT NULL,
    code text NOT NULL
);
"""
KEY_SCHEMA = {
    "type": "struct",
    "optional": False,
    "name": "key",
    "fields": [{"field": "id", "type": "int32", "optional": False}],
}
HERE = Path(__file__).resolve().parent


def fragile(doc: dict[str, Any]) -> dict[str, Any]:
    """A user transform with a bug: it raises on the marker name."""
    if doc.get("name") == POISON:
        raise ValueError(f"cannot handle {POISON}")
    return {**doc, "checked": True}


def tolerant(doc: dict[str, Any]) -> dict[str, Any]:
    """The fixed transform: same output, no exception."""
    return {**doc, "checked": True}


VIEWS: dict[str, Any] = {
    "products": {
        "table": "public.products",
        "transforms": [{"type": "python", "path": "test_dlq:fragile"}],
        "sink_options": {
            "elasticsearch": {"mappings": {"properties": {"code": {"type": "integer"}}}}
        },
    }
}


def _produce_poison(p: Pipeline) -> list[tuple[int, int]]:
    """Write two undecodable records into the view's topic; their positions."""
    topic = p.config.source.topic("public.products")
    positions: list[tuple[int, int]] = []

    def delivered(err: Any, msg: Any) -> None:
        assert err is None, err
        positions.append((msg.partition(), msg.offset()))

    producer = Producer(p.config.kafka.client_conf())
    # The topics are compacted, so records need a key: a valid Debezium one.
    for part, (ident, value) in enumerate(
        [(900, b"\x00\xffnot json"), (901, b'{"hello": "world"}')]
    ):
        key = json.dumps({"schema": KEY_SCHEMA, "payload": {"id": ident}}).encode()
        producer.produce(
            topic, key=key, value=value, partition=part, on_delivery=delivered
        )
    assert producer.flush(30) == 0
    return positions


def _insert(p: Pipeline, rows: list[tuple[int, str, str]]) -> None:
    with p.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO products VALUES (%s, %s, %s)", rows)


def test_dlq_poison_records_dead_lettered_then_replayed_after_fix(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.products"], VIEWS)
    env = {"PYTHONPATH": str(HERE)}
    p.apply_connector()
    worker = p.start_worker(env=env)
    _insert(p, [(i, f"p{i}", str(i)) for i in range(1, 21)])
    _insert(p, [(21, POISON, "21"), (22, "bad code", "abc")])
    poison_at = _produce_poison(p)
    _insert(p, [(i, f"p{i}", str(i)) for i in range(23, 31)])
    p.wait_drained()

    dead = p.dead_letters()
    by_reason: dict[str, list[dlq.DeadRecord]] = {}
    for rec in dead:
        by_reason.setdefault(rec.headers[dlq.H_REASON], []).append(rec)
    assert sorted(by_reason) == ["decode", "sink:elasticsearch", "transform"]
    topic = p.config.source.topic("public.products")
    assert sorted(r.origin for r in by_reason["decode"]) == sorted(
        (topic, part, off) for part, off in poison_at
    )
    (transform,) = by_reason["transform"]
    assert transform.headers[dlq.H_VIEW] == "products"
    assert POISON in transform.headers[dlq.H_MESSAGE]
    (rejected,) = by_reason["sink:elasticsearch"]
    assert "code" in rejected.headers[dlq.H_MESSAGE]
    for rec in dead:
        origin_topic, _part, offset = rec.origin
        assert origin_topic == topic
        assert offset >= 0
        assert rec.headers[dlq.H_CLASS]

    # Valid records around the poison ones are applied everywhere.
    good = {str(i) for i in [*range(1, 21), *range(23, 31)]}
    from pipeline.worker import build_sinks

    held_by = p.config.effective_views()["products"].sinks
    assert set(held_by) == {"redis", "elasticsearch", "mongodb"}
    sinks = build_sinks(p.config, list(held_by))
    try:
        for name, sink in sinks.items():
            sink.open()
            held = sink.ids("products")
            assert good <= held, name
            assert "21" not in held, name
            assert ("22" in held) is (name != "elasticsearch"), name
    finally:
        for sink in sinks.values():
            sink.close()

    # Fix the causes: a transform that no longer raises, and a mapping that
    # keeps a malformed code in the source instead of refusing the document.
    relaxed = {"properties": {"code": {"type": "integer", "ignore_malformed": True}}}
    es_cfg = p.config.sinks["elasticsearch"]
    with elasticsearch.Elasticsearch(es_cfg.hosts) as es:  # type: ignore[union-attr]
        es.indices.put_mapping(
            index=f"{es_cfg.index_prefix}products",  # type: ignore[union-attr]
            properties=relaxed["properties"],
        )
    assert worker.terminate() == 0

    def fix(data: dict[str, Any]) -> None:
        view = data["views"]["products"]
        view["transforms"][0]["path"] = "test_dlq:tolerant"
        view["sink_options"]["elasticsearch"]["mappings"] = relaxed

    p.rewrite(fix)
    p.start_worker(env=env)
    p.wait_drained()

    replayed, failed_again = replay_dead_letters(p.config)
    assert (replayed, failed_again) == (4, 2)  # the undecodable two fail again
    p.assert_converged()
    again = [r for r in p.dead_letters() if r.dlq_offset >= len(dead)]
    assert sorted(r.origin for r in again) == sorted(
        r.origin for r in by_reason["decode"]
    )

    # The CLI shows them, and a second replay takes only what is new since the
    # first one (the two re-dead-lettered records), not the whole topic.
    listed = _cli(p, env, "dlq", "list")
    assert "reason=decode" in listed
    assert "reason=transform" in listed
    assert f"{len(dead) + 2} dead letter(s) shown" in listed
    replayed_again = _cli(p, env, "dlq", "replay")
    assert "replayed 2 dead letter(s); 2 failed again" in replayed_again


def _cli(p: Pipeline, env: dict[str, str], *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--config", str(p.config_path), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout
