"""The definitions a view's documents follow (pipeline.definitions);
tests/integration/test_view_definition.py edits a view on the stack."""

from __future__ import annotations

import json
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


def _cols(table: str, **columns: str) -> dict[str, str]:
    return {f"{definitions.COLUMNS}{table}": json.dumps(columns, sort_keys=True)}


def test_the_source_columns_are_compared_where_both_sides_know_them(cfg) -> None:
    _table, vc = _view(cfg, "table")
    config_only = definitions.of(vc)
    was = {**config_only, **_cols(vc.table, id="integer", name="text", qty="integer")}
    now = {**config_only, **_cols(vc.table, id="integer", note="text", qty="bigint")}
    assert definitions.changed(was, now) == [
        f"columns of {vc.table} (note added; name dropped; qty integer -> bigint)"
    ]
    assert definitions.changed(was, was) == []
    # a record made before the columns were part of it, or a source not
    # read: the settings alone
    assert definitions.changed(config_only, now) == []
    assert definitions.changed(was, config_only) == []


def test_the_way_out_of_a_migration_reads_the_source_again(cfg) -> None:
    table, vc = _view(cfg, "table")
    aggregate, ac = _view(cfg, "aggregate")
    moved = f"columns of {vc.table} (note added)"
    said = definitions.problem(cfg, table, "redis", [moved])
    assert said.startswith(
        f"view {table} in sink redis: the source's columns changed ({moved}) "
    )
    # a replay of the topic would bring back the former columns
    assert said.endswith(f"Rewrite them: readside snapshot {table} --from-source")
    said = definitions.problem(cfg, table, "redis", ["filter", moved])
    assert "its definition changed (filter, columns of" in said
    assert said.endswith(
        f"readside snapshot {table} --rebuild --sink redis, "
        f"then readside snapshot {table} --from-source"
    )
    said = definitions.problem(cfg, aggregate, "redis", [f"columns of {ac.table} ()"])
    assert said.endswith(f"Rewrite them: readside snapshot {aggregate} --sink redis")


def test_the_watch_compares_the_columns_and_completes_a_former_record(
    cfg, caplog
) -> None:
    table, vc = _view(cfg, "table")
    sink = vc.sinks[0]
    recorder = Recorder()
    watch = Watch(cfg, [(table, sink)], recorder)  # type: ignore[arg-type]
    config_only = definitions.of(vc)
    first = _cols(vc.table, id="integer", name="text")
    later = _cols(vc.table, id="integer", name="text", note="text")

    watch.take({}, {table: first})  # a first start records the columns too
    assert recorder.written == {(table, sink): {**config_only, **first}}
    recorder.written.clear()
    # recorded before the columns were part of it: completed, not said
    watch.take({(table, sink): config_only}, {table: first})
    assert recorder.written == {(table, sink): {**config_only, **first}}
    assert not [r for r in caplog.records if r.levelno == logging.ERROR]
    recorder.written.clear()
    # a migration since: said, and nothing recorded over it
    watch.take({(table, sink): {**config_only, **first}}, {table: later})
    assert recorder.written == {}
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert f"the source's columns changed (columns of {vc.table} (note added))" in error
    # the source not read: the settings alone, nothing said of the columns
    watch.take({(table, sink): {**config_only, **first}}, None)
    assert (
        definitions.DEFINITION_CHANGED.labels(view=table, sink=sink)._value.get() == 0
    )


def test_only_the_columns_the_documents_take_are_compared(cfg) -> None:
    """A column the config leaves out, or one a migration adds that the
    view does not take, is no change of the source; the config's own
    change is said as such."""
    table, vc = _view(cfg, "table")
    sink = vc.sinks[0]
    data = yaml.safe_load(repo_config_path().read_text())
    data["views"][table]["fields"] = ["id", "name"]
    fielded = config.parse(data)
    recorded = {
        **definitions.of(fielded.effective_views()[table]),
        **_cols(vc.table, id="integer", name="text", price="integer"),
    }
    more = _cols(vc.table, id="integer", name="text", price="integer", note="text")
    assert definitions.changes(fielded, {(table, sink): recorded}, {table: more}) == {}
    fewer = _cols(vc.table, id="integer", price="integer")
    assert definitions.changes(fielded, {(table, sink): recorded}, {table: fewer}) == {
        (table, sink): [f"columns of {vc.table} (name dropped)"]
    }
    # the config takes price out: said as the config's change alone
    data["views"][table]["fields"] = ["id"]
    narrowed = config.parse(data)
    found = definitions.changes(narrowed, {(table, sink): recorded}, {table: more})
    assert found == {(table, sink): ["fields"]}


def test_an_enum_label_renamed_is_a_change_one_added_is_not(cfg, caplog) -> None:
    """``ALTER TYPE ... RENAME VALUE`` changes what rows read without a
    change of any row; ``ADD VALUE`` changes none. A label added is recorded
    at the next check, so that renaming it later is seen too."""
    table, vc = _view(cfg, "table")
    sink = vc.sinks[0]
    config_only = definitions.of(vc)
    open_closed = _cols(vc.table, id="integer", status='enum ["open", "closed"]')
    added = _cols(vc.table, id="integer", status='enum ["open", "closed", "held"]')
    renamed = _cols(vc.table, id="integer", status='enum ["active", "closed"]')
    unlabelled = _cols(vc.table, id="integer", status="enum")
    was = {**config_only, **open_closed}
    assert definitions.changed(was, {**config_only, **added}) == []
    assert definitions.changed({**config_only, **unlabelled}, was) == []
    assert definitions.changed(was, {**config_only, **renamed}) == [
        f"columns of {vc.table} (status enum label(s) open renamed or dropped)"
    ]
    array = _cols(vc.table, id="integer", status='enum[] ["open", "closed"]')
    assert definitions.changed(was, {**config_only, **array}) == [
        f'columns of {vc.table} (status enum ["open", "closed"] -> '
        f'enum[] ["open", "closed"])'
    ]

    recorder = Recorder()
    watch = Watch(cfg, [(table, sink)], recorder)  # type: ignore[arg-type]
    watch.take({(table, sink): was}, {table: added})
    assert recorder.written == {(table, sink): {**config_only, **added}}
    held_renamed = _cols(
        vc.table, id="integer", status='enum ["open", "closed", "on hold"]'
    )
    recorder.written.clear()
    watch.take({(table, sink): {**config_only, **added}}, {table: held_renamed})
    assert recorder.written == {}
    (error,) = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert "status enum label(s) held renamed or dropped" in error
