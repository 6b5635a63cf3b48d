"""What the worker does with records dropped before it read them
(Worker._lost; pipeline.gaps finds them): tests/integration/
test_retention_gap.py runs it on the stack."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from repo_config import repo_config_path

from connectors.base import ViewTarget
from connectors.memory import MemorySink
from pipeline import config
from pipeline.errors import FatalError
from pipeline.gaps import Gap
from pipeline.views import build_views
from pipeline.worker import Worker

pytestmark = pytest.mark.unit


class Marks:
    """The load marks' watch: what it was told the stream lost."""

    def __init__(self) -> None:
        self.lost: list[dict[str, str]] = []
        #: the load each was told to name
        self.loads: list[str] = []

    def gap(self, views: dict[str, str], load: str = "--rebuild") -> None:
        self.lost.append(views)
        self.loads.append(load)


def _worker(starts: dict[str, Any] | None = None) -> tuple[Worker, config.Config]:
    cfg = config.load(repo_config_path(), env={})
    views = build_views(cfg, starts=starts) if starts else build_views(cfg)
    sinks = {
        name: MemorySink(
            name,
            targets={
                v: ViewTarget(v, f"{name}-{v}", {})
                for v, vc in cfg.effective_views().items()
                if name in vc.sinks
            },
        )
        for name in cfg.sinks
    }
    worker = Worker(cfg, views, sinks)
    worker.handler = SimpleNamespace(  # type: ignore[assignment]
        through_outages=lambda _what, work: work()
    )
    return worker, cfg


def _table_view_topic(cfg: config.Config) -> tuple[str, str, list[str]]:
    """A table view, its topic, and every view that reads the topic."""
    for topic, readers in sorted(cfg.view_topics().items()):
        for view in readers:
            if cfg.effective_views()[view].kind == "table":
                return view, topic, sorted(readers)
    raise AssertionError("the repo config has no table view")


def test_a_gap_takes_the_marks_of_the_views_reading_its_topic(caplog) -> None:
    worker, cfg = _worker()
    _view, topic, readers = _table_view_topic(cfg)
    worker.loads = Marks()  # type: ignore[assignment]
    heartbeat = cfg.source.topic(cfg.source.heartbeat_table)
    worker._lost([Gap(topic, 1, 4, 9), Gap(topic, 2, 0, 3), Gap(heartbeat, 0, 2, 5)])
    lost = (
        f"topic {topic} dropped records 4-8 of partition 1 and records 0-2 of "
        "partition 2 (its retention) before the worker read them: the changes "
        "in them are in no store"
    )
    assert worker.loads.lost == [dict.fromkeys(readers, lost)]  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    views = ", ".join(readers)
    assert errors == [
        f"topic {topic} dropped records 4-8 of partition 1 (its retention) before "
        f"the worker read them: the changes in them are in no store; views: {views}",
        f"topic {topic} dropped records 0-2 of partition 2 (its retention) before "
        f"the worker read them: the changes in them are in no store; views: {views}",
    ]


def test_a_gap_before_a_views_epoch_starts_is_none_of_its_loss() -> None:
    """A view rebuilt in a new epoch applies no record below its start."""
    cfg = config.load(repo_config_path(), env={})
    view, topic, readers = _table_view_topic(cfg)
    worker, _ = _worker({view: {(topic, 1): 9}})
    worker.loads = Marks()  # type: ignore[assignment]
    worker._lost([Gap(topic, 1, 4, 9)])
    others = [v for v in readers if v != view]
    assert [sorted(lost) for lost in worker.loads.lost] == [others]  # type: ignore[attr-defined]
    worker._lost([Gap(topic, 1, 4, 10)])  # record 9 is the epoch's
    assert sorted(worker.loads.lost[1]) == readers  # type: ignore[attr-defined]


def test_a_rebuilds_catch_up_that_meets_a_gap_stops() -> None:
    worker, cfg = _worker()
    _view, topic, readers = _table_view_topic(cfg)
    assert worker.loads is None  # a catch-up keeps no marks
    views = " / ".join(readers)
    with pytest.raises(FatalError, match=f"readside snapshot {views} --rebuild"):
        worker._lost([Gap(topic, 0, 1, 2)])
