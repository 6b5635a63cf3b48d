"""The definitions a view's documents follow (pipeline.definitions);
tests/integration/test_view_definition.py edits a view on the stack."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import yaml
from repo_config import repo_config_path

from pipeline import config, definitions
from pipeline.definitions import REPEAT_S, Watch

pytestmark = pytest.mark.unit


@pytest.fixture
def cfg() -> config.Config:
    return config.load(repo_config_path(), env={})


class Recorder:
    def __init__(self) -> None:
        self.written: dict[tuple[str, str], dict[str, str]] = {}

    def definition(self, view: str, sink: str, definition: dict[str, str]) -> None:
        self.written[(view, sink)] = definition


def _view(cfg: config.Config, kind: str) -> tuple[str, Any]:
    return next((n, v) for n, v in cfg.effective_views().items() if v.kind == kind)


def test_where_documents_go_is_outside_the_definition_and_the_slice_in(cfg) -> None:
    _name, vc = _view(cfg, "table")
    before = definitions.of(vc)
    moved = vc.model_copy(update={"sinks": ["elsewhere"]})
    assert definitions.of(moved) == before
    sliced = vc.model_copy(update={"filter": "true"})
    assert definitions.changed(before, definitions.of(sliced)) == ["filter"]
    shaped = vc.model_copy(update={"exclude": [*vc.exclude, "secret_column"]})
    assert definitions.changed(before, definitions.of(shaped)) == ["exclude"]
    # a setting back to its default is a change too (it leaves the digest)
    fields = vc.model_copy(update={"fields": ["id"]})
    assert definitions.changed(definitions.of(fields), before) == ["fields"]


def test_the_way_out_rewrites_every_document(cfg) -> None:
    table, _ = _view(cfg, "table")
    aggregate, _ = _view(cfg, "aggregate")
    said = definitions.problem(cfg, table, "redis", ["exclude"])
    assert said.endswith(f"readside snapshot {table} --rebuild --sink redis")
    said = definitions.problem(cfg, aggregate, "redis", ["embed", "fields"])
    assert "its definition changed (embed, fields)" in said
    assert said.endswith(f"readside snapshot {aggregate} --sink redis")


def test_a_changed_slice_is_rewritten_by_a_rebuild_or_its_focus_apply(cfg) -> None:
    """A load of the new slice leaves the former's documents: a base view's
    slice takes a rebuild; a focus whose slice alone changed, its apply."""
    aggregate, _ = _view(cfg, "aggregate")
    said = definitions.problem(cfg, aggregate, "redis", ["where"])
    assert said.endswith(f"readside snapshot {aggregate} --rebuild --sink redis")
    data = yaml.safe_load(repo_config_path().read_text())
    data["focuses"] = {"eu": {"view": aggregate, "where": "true"}}
    focused = config.parse(data)
    derived = f"{aggregate}.eu"
    said = definitions.problem(focused, derived, "redis", ["where"])
    assert said.startswith(f"view {derived} in sink redis: its definition changed")
    assert said.endswith("Rewrite them: readside focus apply eu")
    said = definitions.problem(focused, derived, "redis", ["fields", "where"])
    assert said.endswith(f"readside snapshot {derived} --rebuild --sink redis")


def test_a_pair_is_recorded_adopted_said_and_cleared(cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.definitions")
    table, vc = _view(cfg, "table")
    sink = vc.sinks[0]
    clock = [0.0]
    recorder = Recorder()
    watch = Watch(cfg, [(table, sink)], recorder, clock=lambda: clock[0])  # type: ignore[arg-type]
    now = definitions.of(vc)

    watch.take({})  # no record: recorded as it is now
    assert recorder.written == {(table, sink): now}
    assert not caplog.records

    former = {**now, "exclude": "0" * 16}
    watch.take({(table, sink): former})
    watch.take({(table, sink): former})
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [definitions.problem(cfg, table, sink, ["exclude"])]
    clock[0] = REPEAT_S
    watch.take({(table, sink): former})  # said again after REPEAT_S
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    watch.take({(table, sink): now})  # rewritten by a load
    assert f"view {table} in sink {sink}: definition rewritten" in caplog.text
    assert definitions.problems(cfg, {(table, sink): now}) == []
    assert definitions.problems(cfg, {(table, sink): former}) == [
        definitions.problem(cfg, table, sink, ["exclude"])
    ]
