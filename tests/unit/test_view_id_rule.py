"""The ``id:`` of a view: checked when the config loads and against the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from repo_config import write_config

from pipeline import config
from pipeline.aggregate.ids import IdRule
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def _load(tmp_path: Path, view: str, **extra: object) -> config.Config:
    views = dict(GOOD["views"])
    views[view] = {**views[view], **extra}
    return config.load(write_config(tmp_path, {**GOOD, "views": views}), env={})


def _error(tmp_path: Path, view: str, **extra: object) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, view, **extra)
    return str(info.value)


def test_aggregate_view_takes_id_columns(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "customer_orders", id=["id"])
    assert cfg.views["customer_orders"].id == ["id"]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ([], "at least 1 item"),
        (["id", "id"], "id named more than once"),
        (["id; drop"], "not a plain column name"),
        ("id", "valid list"),
    ],
)
def test_bad_id_names_the_field(tmp_path: Path, value: object, says: str) -> None:
    msg = _error(tmp_path, "customer_orders", id=value)
    assert "views.customer_orders.id" in msg
    assert says in msg


def test_table_view_id_is_refused_with_the_way_out(tmp_path: Path) -> None:
    msg = _error(tmp_path, "orders", id=["id"])
    assert "views.orders.id" in msg
    assert "make it an aggregate view" in msg


def test_id_rule_builds_ids_from_named_key_columns() -> None:
    rule = IdRule.of("payments", "public.payments", ["payment_id", "paid_at"], None)
    assert not rule.custom
    assert rule.ident_of([3, "2022-02-26T11:04:00+00:00"]) == (
        "3:2022-02-26T11%3A04%3A00+00%3A00"
    )
    rule = IdRule.of("p", "public.payments", ["payment_id", "paid_at"], ["payment_id"])
    assert rule.custom
    assert rule.ident_of([3, "2022-02-26T11:04:00+00:00"]) == "3"
    assert rule.project([("3", "a"), ("3", "b"), ("1", "c")]) == [("1",), ("3",)]
    swapped = IdRule.of("p", "t.p", ["a", "b"], ["b", "a"])
    assert swapped.custom
    assert swapped.ident({"a": 1, "b": "x:y"}) == "x%3Ay:1"


def test_id_outside_the_key_is_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        IdRule.of("p", "public.payments", ["payment_id", "paid_at"], ["amount"])
    assert str(info.value).startswith("views.p.id: amount not in the primary key")
