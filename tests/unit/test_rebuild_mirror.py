"""The pieces of a rebuild's mirroring and dead letters that need no store."""

from __future__ import annotations

import json

from connectors.base import WriteResult, mirrored
from connectors.redis.keys import parse_state, state_text
from pipeline.events import Delete, Upsert
from pipeline.snapshot.load import Loader
from pipeline.snapshot.state import SnapshotState


def test_mirrored_keeps_live_counts_and_rejections_of_both_once() -> None:
    a = Upsert("v", "1", 5, {"x": 1})
    b = Delete("v", "2", 6)
    live = WriteResult(applied=1, stale=1, rejected=[(a, "live says no")])
    into = WriteResult(applied=2, rejected=[(a, "mirror says no"), (b, "no")])
    got = mirrored(into, live)
    assert (got.applied, got.stale) == (1, 1)
    assert got.rejected == [(a, "live says no"), (b, "no")]


def test_redis_generation_state_round_trips_with_and_without_mirror() -> None:
    assert state_text(1, None) == "1"
    assert state_text(2, 3) == "2>3"
    assert parse_state("2>3") == (2, 3)
    assert parse_state(None) == (1, None)
    assert parse_state("4", "5") == (4, 5)
    assert parse_state(state_text(7, None)) == (7, None)


def test_chunk_origin_names_view_document_and_chunk() -> None:
    st = SnapshotState("agg", ["es"], None, "chunks")
    st.chunks, st.after = 1, ["5"]
    msg = Loader._chunk_origin(st)(Upsert("agg", "7", 9, {"code": "abc"}))
    assert (msg.topic(), msg.partition(), msg.offset()) == ("snapshot:agg", 0, 2)
    assert msg.key() == b'"7"'
    value = msg.value()
    assert isinstance(value, bytes)
    assert json.loads(value) == {"view": "agg", "id": "7", "chunk": 2, "after": ["5"]}
