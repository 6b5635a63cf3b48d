"""Consumer groups follow the scope (views, sinks) their workers apply."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import ConsumerGroupTopicPartitions
from repo_config import repo_config_path

from pipeline import config, kafkaclient
from pipeline.groups import (
    AppliedOffsets,
    Scope,
    client_id,
    scope_of_group,
    worker_group,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg() -> config.Config:
    return config.load(repo_config_path(), env={})


def test_worker_group_full_scope_is_the_config_group(cfg) -> None:
    assert worker_group(cfg, Scope.of(cfg)) == cfg.kafka.group_id
    every_sink = Scope.of(cfg, sinks=list(cfg.sinks))
    assert worker_group(cfg, every_sink) == cfg.kafka.group_id


@pytest.mark.parametrize(
    ("views", "sinks"),
    [
        (["orders"], None),
        (["orders", "customers"], None),
        (None, ["search"]),
        (["customers"], ["cache", "docs"]),
    ],
)
def test_worker_group_scope_round_trips_through_its_name(cfg, views, sinks) -> None:
    scope = Scope.of(cfg, views, sinks)
    name = worker_group(cfg, scope)
    assert name.startswith(cfg.kafka.group_id + ".")
    assert scope_of_group(cfg, name) == scope


def test_scope_of_group_other_groups_are_not_workers(cfg) -> None:
    base = cfg.kafka.group_id
    for other in [f"{base}.dlq-replay", f"{base}-status", "elsewhere", f"{base}.x"]:
        assert scope_of_group(cfg, other) is None
    assert scope_of_group(cfg, f"{base}.views.gone") is None  # a removed view


def test_scope_pairs_only_sinks_of_the_scope(cfg) -> None:
    scope = Scope.of(cfg, ["customers"], ["search"])
    assert scope.pairs(cfg) == {("customers", "search")}


def test_client_id_differs_per_scope(cfg) -> None:
    a = client_id(Scope.of(cfg, ["orders"]))
    assert a == client_id(Scope.of(cfg, ["orders"]))
    assert a != client_id(Scope.of(cfg, ["orders"], ["search"]))
    assert a != client_id(Scope.of(cfg))


class _Offsets:
    """An admin client whose list of groups and group offsets never come (a
    broker restarted under it) or come empty; it counts the asks."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.asked = 0

    def _answer(self, value: Any) -> Any:
        self.asked += 1
        answers = self.answers

        class Future:
            def result(self, timeout: float) -> Any:
                if not answers:
                    raise TimeoutError()
                return value

        return Future()

    def list_consumer_groups(self, **_kw: Any) -> Any:
        return self._answer(type("Listed", (), {"valid": []})())

    def list_consumer_group_offsets(self, requests: Any, **_kw: Any) -> Any:
        group = requests[0].group_id
        return {group: self._answer(ConsumerGroupTopicPartitions(group, []))}


@pytest.mark.parametrize("listed", [True, False], ids=["offsets", "list_of_groups"])
def test_applied_offsets_take_a_new_admin_client_after_one_that_did_not_answer(
    cfg, monkeypatch: pytest.MonkeyPatch, listed: bool
) -> None:
    """Its group offsets, or its list of groups, did not come. A full
    suite's run found the watermark standing still for two minutes after a
    broker restart, its samples timing out on the list of groups: only a
    timeout on the offsets had made a new client."""
    made = [_Offsets(answers=False), _Offsets(answers=True)]
    monkeypatch.setattr(kafkaclient, "admin", lambda _kafka: made.pop(0))
    applied = AppliedOffsets(cfg)
    if listed:
        applied._groups = {cfg.kafka.group_id: Scope.of(cfg)}
        applied._listed_at = float("inf")  # the groups are listed already
    stuck = applied.admin
    with pytest.raises(TimeoutError):
        applied.by_pair([("t", 0)])
    assert applied.admin is not stuck
    every_pair = Scope.of(cfg).pairs(cfg)
    assert applied.by_pair([("t", 0)]) == {p: {} for p in every_pair}  # answered
    assert (stuck.asked, made) == (1, [])
