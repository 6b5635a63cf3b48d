"""Topic layouts and view epochs (pipeline.layout): what changed, and the
versions of a view on a new epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from repo_config import DATA, repo_config_path, write_config

from pipeline import config, layout, layoutguard
from pipeline.aggregate.reader import snapshot_version
from pipeline.errors import TransientError
from pipeline.events import ChangeEvent, Delete, Op, Position, Upsert, table_version
from pipeline.viewconfig import TableViewConfig
from pipeline.views import TableView, build_views

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
TOPIC = "app.public.items"


def lay(**kw: Any) -> layout.TopicLayout:
    base: dict[str, Any] = {
        "view": "items",
        "topic": TOPIC,
        "topic_id": "A",
        "partitions": 3,
    }
    return layout.TopicLayout(**{**base, **kw})


def test_layout_change_more_partitions_names_both_counts() -> None:
    assert lay().change("A", 6) == "partitions 3 -> 6"


def test_layout_change_new_topic_id_says_recreated() -> None:
    change = lay().change("B", 3)
    assert change is not None
    assert change.startswith("topic recreated")


def test_layout_change_same_layout_is_none() -> None:
    assert lay().change("A", 3) is None


def test_refusal_names_view_topic_change_and_way_out() -> None:
    text = layoutguard.refusal("items", TOPIC, "partitions 3 -> 6")
    assert f"topic {TOPIC}" in text
    assert "partitions 3 -> 6" in text
    assert "readside snapshot items --rebuild" in text


def test_xmax_refusals_source_behind_mark_refuses_only_that_view() -> None:
    marks = [layout.XmaxMark("a", 0, 500), layout.XmaxMark("b", 0, 90)]
    refused = layoutguard.xmax_refusals(marks, 100)
    assert len(refused) == 1
    assert refused[0].startswith("view a:")
    assert "readside snapshot a --rebuild" in refused[0]


def test_xmax_refusals_source_at_mark_accepts() -> None:
    assert layoutguard.xmax_refusals([layout.XmaxMark("a", 0, 100)], 100) == []


def test_xmax_of_version_gives_epoch_and_xmax() -> None:
    assert layoutguard.xmax_of(snapshot_version(2, 123_456, 7)) == (2, 123_456)


def test_recorded_epochs_and_starts_by_view() -> None:
    rec = layout.Recorded(
        {("items", TOPIC): lay(epoch=2, starts={"0": 10, "5": 0})},
        {"agg": layout.XmaxMark("agg", 1, 5)},
    )
    assert rec.epochs() == {"items": 2, "agg": 1}
    assert rec.starts() == {"items": {(TOPIC, 0): 10, (TOPIC, 5): 0}}


def change(offset: int, partition: int = 0, op: Op = Op.UPDATE) -> ChangeEvent:
    row = {"id": 1, "name": "x"}
    return ChangeEvent(
        "public.items",
        op,
        {"id": 1},
        None,
        None if op is Op.DELETE else row,
        None,
        None,
        None,
        Position(TOPIC, partition, offset),
    )


def view_at(epoch: int, starts: dict[tuple[str, int], int]) -> TableView:
    cfg = TableViewConfig(table="public.items", sinks=["redis"])
    return TableView("items", cfg, epoch, None, None, starts)


def test_table_view_event_below_epoch_start_is_not_applied() -> None:
    view = view_at(1, {(TOPIC, 0): 1000})
    assert view.ops_for(change(999)) == []
    assert view.ops_for(change(999, op=Op.DELETE)) == []


def test_table_view_new_epoch_beats_every_old_version() -> None:
    # A key's old event at offset 1000 of partition 0, its new one at offset
    # 5 of a new partition: the new epoch's version wins.
    view = view_at(1, {(TOPIC, 0): 1000, (TOPIC, 3): 0})
    [op] = view.ops_for(change(5, partition=3))
    assert isinstance(op, Upsert)
    assert op.version == table_version(1, 5) > table_version(0, 1000)
    [gone] = view.ops_for(change(1000, op=Op.DELETE))
    assert isinstance(gone, Delete)
    assert gone.version == table_version(1, 1000)


def test_build_views_passes_epochs_and_starts() -> None:
    cfg = config.load(repo_config_path(), env={})
    views = build_views(cfg, {"products": 3}, ["products"], {"products": {("t", 0): 7}})
    view = views["products"]
    assert isinstance(view, TableView)
    assert (view.epoch, view.starts) == (3, {("t", 0): 7})


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def produce(self, topic: str, key: bytes, value: str) -> None:
        self.sent.append((topic, key))

    def poll(self, _timeout: float) -> int:
        return 0


def test_guard_note_written_raises_the_mark_only_when_higher(tmp_path: Path) -> None:
    # no kafka.client: the guard's producer is a stand-in, no broker is asked
    kafka = {k: v for k, v in DATA["kafka"].items() if k != "client"}
    cfg = config.load(write_config(tmp_path, {**DATA, "kafka": kafka}), env={})
    guard = layoutguard.Guard(cfg, ["customer_orders"])
    producer = FakeProducer()
    first = [Delete("customer_orders", "1", snapshot_version(0, 50, 0))]
    guard.note_written(producer, {"customer_orders": first})  # type: ignore[arg-type]
    older = [Delete("customer_orders", "1", snapshot_version(0, 40, 0))]
    guard.note_written(producer, {"customer_orders": older})  # type: ignore[arg-type]
    assert producer.sent == [(cfg.kafka.checkpoint_topic, b"__xmax__|customer_orders")]


class _FlakyGuard:
    """A guard whose checks fail ``failures`` times as Kafka right after a
    restart does, then pass."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def start(self) -> layout.Recorded:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("topic not readable: not leader for partition")
        return layout.Recorded()


def _fast(cfg: Any) -> Any:
    worker = cfg.worker.model_copy(
        update={"backoff_initial_ms": 1, "backoff_max_ms": 5}
    )
    return cfg.model_copy(update={"worker": worker})


def test_worker_start_up_checks_retry_a_broker_not_ready_yet() -> None:
    from pipeline.worker import _start_guard

    cfg = _fast(config.load(repo_config_path(), env={}))
    guard = _FlakyGuard(failures=3)
    got = _start_guard(cfg, guard, early=[])  # type: ignore[arg-type]
    assert isinstance(got, layout.Recorded)
    assert guard.calls == 4


def test_worker_start_up_checks_give_way_to_a_stop() -> None:
    from pipeline.worker import _start_guard

    cfg = _fast(config.load(repo_config_path(), env={}))
    guard = _FlakyGuard(failures=10**6)
    assert _start_guard(cfg, guard, early=[15]) is None  # type: ignore[arg-type]
    assert guard.calls == 1
