"""What a worker says of a publication that leaves changes out
(pipeline.publication); tests/integration/test_publication_drift.py changes
the publication on the stack."""

from __future__ import annotations

import logging

import pytest
from repo_config import repo_config_path

from connectors.debezium import config_problems, connector_config
from connectors.postgres import _way_back
from pipeline import config
from pipeline.publication import REPEAT_S, Watch
from pipeline.viewconfig import TableViewConfig

pytestmark = pytest.mark.unit


@pytest.fixture
def cfg() -> config.Config:
    return config.load(repo_config_path(), env={})


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_each_problem_is_said_once_per_repeat_and_its_end_too(cfg, caplog) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.publication")
    now = [0.0]
    watch = Watch(cfg, list(cfg.effective_views()), lambda: now[0])
    assert cfg.source.heartbeat_table in watch.tables
    a, b = (
        "publication p does not publish t: x",
        "publication p has a row filter on u: y",
    )
    watch.take([a])
    watch.take([a, b])
    assert _errors(caplog) == [f"source: {a}", f"source: {b}"]
    now[0] += REPEAT_S
    watch.take([a, b])
    assert len(_errors(caplog)) == 4
    watch.take([b])
    assert "source: resolved: publication p does not publish t" in caplog.text
    watch.take([b])
    assert len(_errors(caplog)) == 4


def test_the_way_back_names_each_view_of_the_tables_and_its_load(cfg) -> None:
    views = cfg.effective_views()
    table_view = next(n for n, v in views.items() if isinstance(v, TableViewConfig))
    aggregate = next(n for n, v in views.items() if not isinstance(v, TableViewConfig))
    said = _way_back(cfg, views[table_view].tables() + views[aggregate].tables())
    assert said.startswith("; publish them whole again (readside connector apply)")
    assert f"readside snapshot {table_view} --from-source" in said
    # an aggregate view too: the rows gone meanwhile get their tombstones
    assert f"readside snapshot {aggregate} --from-source" in said
    assert "then" not in _way_back(cfg, ["public.nothing_reads_this"])


def test_a_connector_as_readside_set_it_has_no_problem(cfg) -> None:
    live = {**connector_config(cfg), "name": cfg.connect.connector}
    assert config_problems(cfg, live) == []
    assert config_problems(cfg, None) == []  # no connector: its state says so


def test_a_connector_changed_by_hand_names_each_setting_and_hides_secrets(
    cfg,
) -> None:
    want = connector_config(cfg)
    live = {
        **want,
        "skipped.operations": "t,d",
        "column.exclude.list": "public.customers.email",
        "database.password": "changed-by-hand",
        "transforms.x.password": "s3cret",
    }
    del live["tombstones.on.delete"]
    (said,) = config_problems(cfg, live)
    assert said.startswith(f"connector {cfg.connect.connector} is not as readside")
    assert "skipped.operations 't,d' (readside sets 't')" in said
    assert "tombstones.on.delete removed (readside sets 'true')" in said
    assert "column.exclude.list added ('public.customers.email')" in said
    assert "database.password (hidden) (readside sets (hidden))" in said
    assert "transforms.x.password added ((hidden))" in said
    assert "changed-by-hand" not in said
    assert "s3cret" not in said
    # the way back: set it again, then load every view from the source
    assert "readside connector apply" in said
    for view in cfg.effective_views():
        assert f"readside snapshot {view} --from-source" in said


def test_a_generated_column_the_connector_does_not_leave_out_is_said(cfg) -> None:
    """A migration added a generated column after ``connector apply``."""
    live = {**connector_config(cfg), "name": cfg.connect.connector}
    generated = ["public.orders.total"]
    (said,) = config_problems(cfg, live, generated)
    wanted = repr(r"public\.orders\.total")
    assert f"column.exclude.list removed (readside sets {wanted})" in said
    assert "readside connector apply" in said
    applied = {**connector_config(cfg, generated), "name": cfg.connect.connector}
    assert config_problems(cfg, applied, generated) == []
