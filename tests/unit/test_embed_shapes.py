"""Shaping options of aggregate embed levels (``value``, ``lift``): which
combinations the config takes and how a refusal names the level."""

from __future__ import annotations

from typing import Any

import pytest
from test_aggregate_plan import ORDERS, TAGS, data, parse_error

from pipeline import config, viewconfig

pytestmark = pytest.mark.unit

PARENT: dict[str, Any] = {"parent": "public.orders", "on": {"id": "id"}}


def relation(cfg: config.Config, key: str) -> viewconfig.RelationConfig:
    view = cfg.views["x"]
    assert isinstance(view, viewconfig.AggregateViewConfig)
    return view.embed[key]


@pytest.mark.parametrize(
    ("key", "level"),
    [
        ("orders", {**ORDERS, "embed": {}, "value": "status"}),
        ("tags", {**TAGS, "value": "label", "order_by": ["label desc"]}),
        ("last", {**PARENT, "value": "status"}),
    ],
)
def test_parse_value_on_any_kind_is_accepted(key: str, level: dict[str, Any]) -> None:
    assert relation(config.parse(data(**{key: level})), key).value == level["value"]


def test_parse_lift_on_parent_is_accepted_with_fields_and_embeds() -> None:
    level = {**PARENT, "lift": True, "fields": ["status"], "rename": {"status": "s"}}
    level["embed"] = {"items": {"children": "public.items", "on": {"order_id": "id"}}}
    got = relation(config.parse(data(last=level)), "last")
    assert got.lift
    assert got.value is None


@pytest.mark.parametrize(
    "extra",
    [
        {"fields": ["id"]},
        {"fields": []},
        {"exclude": ["id"]},
        {"rename": {"id": "x"}},
        {"embed": {"items": {"children": "public.items", "on": {"order_id": "id"}}}},
    ],
)
def test_parse_value_with_shaping_of_objects_is_rejected(extra: dict[str, Any]) -> None:
    msg = parse_error(data(last={**PARENT, "value": "status", **extra}))
    assert "views.x.embed.last:" in msg
    assert "value takes one column" in msg


@pytest.mark.parametrize("level", [{**ORDERS}, {**TAGS}])
def test_parse_lift_on_an_array_is_rejected(level: dict[str, Any]) -> None:
    msg = parse_error(data(many={**level, "lift": True}))
    assert "views.x.embed.many:" in msg
    assert "lift applies to a parent (many-to-one) only" in msg


def test_parse_lift_and_value_together_are_rejected() -> None:
    msg = parse_error(data(last={**PARENT, "lift": True, "value": "status"}))
    assert "set lift or value, not both" in msg


def test_parse_value_not_a_plain_column_names_field() -> None:
    msg = parse_error(data(last={**PARENT, "value": "status; drop"}))
    assert "views.x.embed.last.value" in msg
    assert "is not a plain column name" in msg
