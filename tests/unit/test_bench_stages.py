"""The benchmark's CPU split per worker stage, on a real processor."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

import pipeline.processor
from bench import events
from bench.stages import STAGES, StageClock
from pipeline.decode import FakeMessage
from pipeline.processor import Processor
from pipeline.viewconfig import TableViewConfig
from pipeline.views import TableView

pytestmark = pytest.mark.unit

PREFIX = "benchstages"
TOPIC = f"{PREFIX}.{events.TABLE}"


def test_stage_clock_splits_one_batch_into_decode_view_coalesce_commit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the clock patches the module's coalesce: restored after the test
    monkeypatch.setattr(pipeline.processor, "coalesce", pipeline.processor.coalesce)
    view = TableView(
        "items", TableViewConfig(table=events.TABLE, sinks=["m"]), 0, None, None
    )
    processor = Processor({"items": view}, {TOPIC: ["items"]})
    committed: list[Any] = []
    worker = SimpleNamespace(
        processor=processor, _commit=lambda msgs, batch: committed.append(batch)
    )
    msgs = [
        FakeMessage(TOPIC, v, k, 0, n)
        for n, (k, v) in enumerate(events.records(PREFIX, 400))
    ]
    clock = StageClock()
    clock.install(worker)
    processor.process(msgs[:1])  # before start: not counted
    assert clock.cpu == dict.fromkeys(STAGES, 0.0)
    clock.start()
    before = time.thread_time()
    batch = worker.processor.process(msgs[1:])
    spent = time.thread_time() - before
    worker._commit(msgs[1:], batch)
    clock.stop()
    assert committed == [batch]
    assert len(batch.ops["items"]) == 399
    for stage in ("decode", "view", "coalesce", "commit"):
        assert clock.cpu[stage] > 0, stage
    inside = clock.cpu["decode"] + clock.cpu["view"] + clock.cpu["coalesce"]
    assert inside == pytest.approx(spent, rel=0.05)
    per_event = clock.per_event_us(399)
    assert per_event["other (main thread)"] >= 0
    assert per_event["total"] >= per_event["decode"] > 0
    assert set(per_event) == {*STAGES, "other (main thread)", "other threads", "total"}
