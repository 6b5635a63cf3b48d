"""Consumer groups follow the scope (views, sinks) their workers apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from repo_config import repo_config_path

from pipeline import config
from pipeline.groups import Scope, client_id, scope_of_group, worker_group

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
