"""The worker's look at the load marks of its views (pipeline.loaded), on
in-memory sinks; tests/integration/test_store_lost.py drives it on the
stack's stores."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from repo_config import repo_config_path

from connectors.base import ViewTarget
from connectors.memory import MemorySink
from pipeline import config
from pipeline.errors import FatalError, TransientError
from pipeline.loaded import CHECK_INTERVAL_S, REPEAT_S, Watch, mark_loaded, pairs

pytestmark = pytest.mark.unit


class Group:
    """A consumer whose group committed offsets on some topics; ``lows``: the
    first offset of each (topic, partition) whose retention dropped records."""

    def __init__(
        self,
        read: set[str],
        topics: list[str],
        lows: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.read = read
        self.topics = topics
        self.lows = lows or {}

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> Any:
        return self.lows.get((tp.topic, tp.partition), 0), 100

    def list_topics(self, timeout: float) -> Any:
        meta = SimpleNamespace(partitions={0: None, 1: None}, error=None)
        return SimpleNamespace(topics={t: meta for t in self.topics})

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[Any]:
        return [
            TopicPartition(tp.topic, tp.partition, 5 if tp.topic in self.read else -1)
            for tp in parts
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cfg() -> config.Config:
    return config.load(repo_config_path(), env={})


def _sinks(cfg: config.Config) -> dict[str, MemorySink]:
    views = cfg.effective_views()
    return {
        name: MemorySink(
            name,
            targets={
                v: ViewTarget(v, f"{name}-{v}", {})
                for v, vc in views.items()
                if name in vc.sinks
            },
        )
        for name in cfg.sinks
    }


def _watch(
    cfg: config.Config,
    sinks: dict[str, MemorySink],
    clock: Clock | None = None,
    policy: str = "compact",
) -> Watch:
    return Watch(
        cfg,
        list(cfg.effective_views()),
        sinks,
        clock or Clock(),
        topic_settings=_settings(policy),
    )


def _settings(policy: str) -> Any:
    """The broker's answer: each topic's ``cleanup.policy`` is ``policy``."""

    def settings(topics: list[str]) -> dict[str, dict[str, str]]:
        return {t: {"cleanup.policy": policy} for t in topics}

    return settings


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_first_start_marks_every_view_in_every_sink(cfg, caplog) -> None:
    sinks = _sinks(cfg)
    watch = _watch(cfg, sinks)
    watch.start(Group(set(), list(cfg.view_topics())))
    every = pairs(cfg, cfg.effective_views(), sinks)
    assert every
    assert len(watch.pairs) == len(every)
    assert all(sinks[s].loaded(v) for v, s in every)
    assert _errors(caplog) == []


def _cut(cfg: config.Config) -> tuple[str, list[tuple[str, str]], list[str]]:
    """A topic of the config read by one view only, the pairs of that view,
    and the views that do not read it."""
    by_topic = cfg.view_topics()
    topic = next(t for t, vs in by_topic.items() if len(vs) == 1)
    (view,) = by_topic[topic]
    sinks = cfg.effective_views()[view].sinks
    others = [v for v in cfg.effective_views() if v != view]
    return topic, [(view, s) for s in sinks], others


@pytest.mark.parametrize("policy", ["delete", "compact,delete"])
def test_a_first_start_on_a_topic_that_dropped_records_marks_nothing_of_it(
    cfg, caplog, policy
) -> None:
    """Retention dropped the first records of a partition: the rows they held
    are in no record, so the stream from the start cannot make the view whole."""
    topic, cut_pairs, others = _cut(cfg)
    sinks = _sinks(cfg)
    watch = _watch(cfg, sinks, policy=policy)
    watch.start(Group(set(), list(cfg.view_topics()), {(topic, 1): 40}))
    for view, sink in watch.pairs:
        assert sinks[sink].loaded(view) is (view in others), (view, sink)
    errors = _errors(caplog)
    assert len(errors) == len(cut_pairs)
    view, sink = cut_pairs[0]
    kind = cfg.effective_views()[view].kind
    load = (
        f"readside snapshot {view} --sink {sink}"
        if kind == "aggregate"
        else f"readside snapshot {view} --from-source"
    )
    said = (
        f"view {view} is not whole in sink {sink}: its load mark is missing; "
        "this first start read its topics from their first records, but topic "
        f"{topic} (cleanup.policy {policy}) no longer holds records 0-39 of "
        "partition 1"
    )
    assert any(e.startswith(said) and e.endswith(load) for e in errors), errors


def test_a_compacted_topic_is_whole_whatever_its_first_offset(cfg, caplog) -> None:
    """Compaction removes only records a newer one of their key follows."""
    topic, _pairs, _others = _cut(cfg)
    sinks = _sinks(cfg)
    _watch(cfg, sinks).start(Group(set(), list(cfg.view_topics()), {(topic, 0): 7}))
    assert all(sinks[s].loaded(v) for v, s in pairs(cfg, cfg.effective_views(), sinks))
    assert _errors(caplog) == []


def test_an_unmarked_view_the_group_read_is_reported_not_marked(cfg, caplog) -> None:
    sinks = _sinks(cfg)
    watch = _watch(cfg, sinks)
    watch.start(Group(set(list(cfg.view_topics())), list(cfg.view_topics())))
    every = pairs(cfg, cfg.effective_views(), sinks)
    assert not any(sinks[s].loaded(v) for v, s in every)
    errors = _errors(caplog)
    assert len(errors) == len(every)
    view, sink = every[0]
    assert any(
        f"view {view} is not whole in sink {sink}" in e
        and f"readside snapshot {view} --sink {sink}" in e
        and "the store lost them" in e
        for e in errors
    )


def test_a_lost_view_is_reported_once_per_repeat_and_cleared_by_a_mark(
    cfg, caplog
) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.loaded")
    sinks = _sinks(cfg)
    clock = Clock()
    watch = _watch(cfg, sinks, clock)
    watch.start(Group(set(), list(cfg.view_topics())))
    view, sink = watch.pairs[0]
    sinks[sink].drop(view)  # the store loses the view
    assert not watch.due()
    clock.now += CHECK_INTERVAL_S
    assert watch.due()
    watch.check()
    assert len(_errors(caplog)) == 1
    clock.now += CHECK_INTERVAL_S
    watch.check()  # still lost: not said again so soon
    assert len(_errors(caplog)) == 1
    clock.now += REPEAT_S
    watch.check()
    assert len(_errors(caplog)) == 2
    mark_loaded({sink: sinks[sink]}, [view])  # a snapshot loaded it
    watch.check()
    assert f"view {view} is whole again in sink {sink}" in caplog.text
    assert watch.unloaded == {}


def test_with_no_data_a_first_start_marks_nothing(cfg, caplog) -> None:
    source = cfg.source.model_copy(update={"snapshot_mode": "no_data"})
    cfg = cfg.model_copy(update={"source": source})
    sinks = _sinks(cfg)
    _watch(cfg, sinks).start(Group(set(), list(cfg.view_topics())))
    errors = _errors(caplog)
    assert errors
    assert all("never loaded" in e for e in errors)


def test_only_the_views_of_a_topic_the_group_read_are_reported(cfg, caplog) -> None:
    by_topic = cfg.view_topics()
    topic = next(t for t, vs in by_topic.items() if len(vs) < len(cfg.views))
    sinks = _sinks(cfg)
    watch = _watch(cfg, sinks)
    watch.start(Group({topic}, list(cfg.view_topics())))
    for view, sink in watch.pairs:
        reads = topic in {t for t, vs in by_topic.items() if view in vs}
        assert sinks[sink].loaded(view) is not reads, (view, sink)


def test_a_store_that_does_not_answer_is_asked_again(cfg, caplog) -> None:
    sinks = _sinks(cfg)
    clock = Clock()
    watch = _watch(cfg, sinks, clock)
    watch.start(Group(set(), list(cfg.view_topics())))
    _view, sink = watch.pairs[0]

    def down(_view: str) -> bool:
        raise TransientError("memory: down")

    sinks[sink].loaded = down  # type: ignore[method-assign]
    clock.now += CHECK_INTERVAL_S
    watch.check()
    assert "load mark not read" in caplog.text
    assert _errors(caplog) == []
    assert not watch.due()


class Recorder:
    """The checkpoint writer's two records of a pair's state."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str, str]] = []

    def unloaded(
        self, view: str, sink: str, since_ms: int, why: str, load: str
    ) -> None:
        assert since_ms > 0
        assert why
        assert load.startswith(f"readside snapshot {view}")
        self.said.append(("unloaded", view, sink))

    def whole(self, view: str, sink: str) -> None:
        self.said.append(("whole", view, sink))


def _recorded(
    cfg: config.Config,
    sinks: dict[str, MemorySink],
    clock: Clock,
    rec: Recorder,
    policy: str,
) -> Watch:
    """A watch whose states go to ``rec`` (checkpoint records)."""
    return Watch(
        cfg,
        list(cfg.effective_views()),
        sinks,
        clock,
        rec,  # type: ignore[arg-type]
        _settings(policy),
    )


def test_each_change_of_state_is_recorded_for_status(cfg) -> None:
    sinks = _sinks(cfg)
    clock, rec = Clock(), Recorder()
    watch = _recorded(cfg, sinks, clock, rec, "compact")
    watch.start(Group(set(), list(cfg.view_topics())))
    assert rec.said == [("whole", v, s) for v, s in watch.pairs]  # clears old ones
    view, sink = watch.pairs[0]
    rec.said.clear()
    sinks[sink].drop(view)
    for _ in range(3):
        clock.now += REPEAT_S
        watch.check()
    assert rec.said == [("unloaded", view, sink)]  # once, not per repeat
    mark_loaded({sink: sinks[sink]}, [view])
    watch.check()
    watch.check()
    assert rec.said == [("unloaded", view, sink), ("whole", view, sink)]


def test_a_store_that_refuses_the_mark_is_left_out_not_fatal(cfg, caplog) -> None:
    sinks = _sinks(cfg)
    clock = Clock()
    watch = _watch(cfg, sinks, clock)
    view, sink = watch.pairs[0]

    def refused(_view: str) -> bool:
        raise FatalError("memory: not authorized")

    sinks[sink].loaded = refused  # type: ignore[method-assign]
    watch.start(Group(set(), list(cfg.view_topics())))
    assert (view, sink) not in watch.pairs
    assert "load mark not kept" in caplog.text
    assert _errors(caplog) == []
    other_view, other_sink = watch.pairs[0]
    sinks[other_sink].loaded = refused  # type: ignore[method-assign]
    clock.now += CHECK_INTERVAL_S
    watch.check()  # refused later: left out too
    assert (other_view, other_sink) not in watch.pairs


def test_records_dropped_unread_take_the_marks_away_until_a_load(cfg, caplog) -> None:
    """A gap in the stream (pipeline.gaps): the view loses its mark in every
    store, so it is reported, and recorded, until a load marks it again;
    the views of other topics keep theirs."""
    topic, lost_pairs, others = _cut(cfg)
    (view,) = {v for v, _s in lost_pairs}
    sinks = _sinks(cfg)
    clock, rec = Clock(), Recorder()
    watch = _recorded(cfg, sinks, clock, rec, "delete")
    watch.start(Group({topic, *cfg.view_topics()}, list(cfg.view_topics())))
    mark_loaded(sinks, list(cfg.effective_views()))  # whole before the gap
    watch.check()
    rec.said.clear()
    caplog.clear()
    said = f"topic {topic} dropped records 7-11 of partition 1 (its retention)"
    watch.gap({view: said})
    assert {(v, s) for v, s in watch.pairs if not sinks[s].loaded(v)} == set(lost_pairs)
    assert all(sinks[s].loaded(v) for v, s in watch.pairs if v in others)
    for _view, sink in lost_pairs:
        assert (
            f"view {view} is not whole in sink {sink}: its load mark is missing; "
            f"{said}. Load it while the worker goes on: readside snapshot {view} "
            "--rebuild"
        ) in _errors(caplog)
    assert rec.said == [("unloaded", view, s) for _v, s in lost_pairs]
    clock.now += CHECK_INTERVAL_S
    watch.check()  # still unmarked: said again only after REPEAT_S
    assert len(_errors(caplog)) == len(lost_pairs)
    mark_loaded(sinks, [view])
    watch.check()
    assert rec.said[len(lost_pairs) :] == [("whole", view, s) for _v, s in lost_pairs]


def test_a_view_held_whole_whose_group_lost_its_offsets_on_a_cut_topic(
    cfg, caplog
) -> None:
    """The group's offsets expired (or its name changed) while the store
    holds the view, and the topic dropped records meanwhile: the worker
    reads from a start past records it never applied, so the marks go and
    the rebuild is named. Without the cut, the view stays whole."""
    topic, cut_pairs, others = _cut(cfg)
    (view,) = {v for v, _s in cut_pairs}
    for policy, cut in (("compact", False), ("delete", True)):
        sinks = _sinks(cfg)
        mark_loaded(sinks, list(cfg.effective_views()))
        caplog.clear()
        watch = _watch(cfg, sinks, policy=policy)
        watch.start(Group(set(), list(cfg.view_topics()), {(topic, 1): 40}))
        unmarked = {(v, s) for v, s in watch.pairs if not sinks[s].loaded(v)}
        assert unmarked == (set(cut_pairs) if cut else set()), policy
        assert all(sinks[s].loaded(v) for v, s in watch.pairs if v in others)
        errors = _errors(caplog)
        assert len(errors) == (len(cut_pairs) if cut else 0), errors
        for said in errors:
            assert "its group has no committed offset on the view's topics" in said
            assert f"topic {topic} (cleanup.policy delete) no longer holds" in said
            assert said.endswith(f"readside snapshot {view} --rebuild")
