"""Aggregate views without services: config validation and snapshot versions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pipeline import config, viewconfig
from pipeline.aggregate.reader import (
    EPOCH_SPAN,
    XIP_FACTOR,
    XMAX_LIMIT,
    Snapshot,
    full_xid,
    snapshot_version,
)
from pipeline.errors import ConfigError

pytestmark = pytest.mark.unit

TABLES = [
    "public.customers",
    "public.orders",
    "public.items",
    "public.tags",
    "public.customer_tags",
]

ORDERS: dict[str, Any] = {
    "children": "public.orders",
    "on": {"customer_id": "id"},
    "order_by": ["placed desc", "id"],
    "limit": 10,
    "embed": {"items": {"children": "public.items", "on": {"order_id": "id"}}},
}
TAGS: dict[str, Any] = {
    "many_to_many": "public.tags",
    "through": "public.customer_tags",
    "on": {"customer_id": "id"},
    "target_on": {"id": "tag_id"},
}


def data(**embed: Any) -> dict[str, Any]:
    """A config with one aggregate view ``x`` over customers, embedding ``embed``."""
    return {
        "source": {"dsn": "postgresql://u@h/db", "tables": list(TABLES)},
        "sinks": {"cache": {"type": "redis"}},
        "views": {
            "x": {
                "kind": "aggregate",
                "table": "public.customers",
                "sinks": ["cache"],
                "embed": copy.deepcopy(embed),
            }
        },
    }


def parse_error(raw: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(raw)
    return str(info.value)


# --- config ------------------------------------------------------------------


def test_parse_aggregate_view_nested_levels_resolves_tables_and_topics() -> None:
    cfg = config.parse(data(orders=ORDERS, tags=TAGS))
    view = cfg.views["x"]
    assert isinstance(view, viewconfig.AggregateViewConfig)
    assert view.table_fields() == [
        ("table", "public.customers"),
        ("embed.orders.children", "public.orders"),
        ("embed.orders.embed.items.children", "public.items"),
        ("embed.tags.many_to_many", "public.tags"),
        ("embed.tags.through", "public.customer_tags"),
    ]
    assert view.embed["orders"].kind == "children"
    assert view.embed["tags"].kind == "m2m"
    # Every participating table feeds the view, the through table included.
    assert set(cfg.view_topics()) == {f"readside.{t}" for t in TABLES}


@pytest.mark.parametrize(
    ("relation", "needle"),
    [
        (
            {**ORDERS, "parent": "public.orders"},
            "exactly one of children, parent, many_to_many (got children, parent)",
        ),
        (
            {"on": {"customer_id": "id"}},
            "exactly one of children, parent, many_to_many (got none)",
        ),
        (
            {**TAGS, "children": "public.orders"},
            "(got children, many_to_many)",
        ),
    ],
)
def test_parse_relation_not_exactly_one_kind_names_relation(
    relation: dict[str, Any], needle: str
) -> None:
    msg = parse_error(data(orders=relation))
    assert needle in msg
    assert "views.x.embed.orders:" in msg


@pytest.mark.parametrize("missing", ["through", "target_on"])
def test_parse_many_to_many_without_through_or_target_on_is_rejected(
    missing: str,
) -> None:
    relation = {k: v for k, v in TAGS.items() if k != missing}
    msg = parse_error(data(tags=relation))
    assert "views.x.embed.tags:" in msg
    assert "many_to_many needs through and target_on" in msg


def test_parse_through_on_children_is_rejected() -> None:
    relation = {**ORDERS, "through": "public.customer_tags"}
    msg = parse_error(data(orders=relation))
    assert "through and target_on belong to many_to_many only" in msg


@pytest.mark.parametrize("direction", ["sideways", "descending", "asc nulls"])
def test_parse_order_by_bad_direction_names_field(direction: str) -> None:
    relation = {**ORDERS, "order_by": [f"placed {direction}"]}
    msg = parse_error(data(orders=relation))
    assert "views.x.embed.orders.order_by" in msg
    assert "direction must be asc or desc" in msg


@pytest.mark.parametrize("direction", ["", " asc", " DESC", " Asc"])
def test_parse_order_by_good_direction_is_accepted(direction: str) -> None:
    relation = {**ORDERS, "order_by": [f"placed{direction}"]}
    cfg = config.parse(data(orders=relation))
    view = cfg.views["x"]
    assert isinstance(view, viewconfig.AggregateViewConfig)
    assert view.embed["orders"].order_by == [f"placed{direction}"]


def test_parse_order_by_or_limit_on_parent_is_rejected() -> None:
    relation = {"parent": "public.orders", "on": {"id": "id"}, "limit": 1}
    msg = parse_error(data(last=relation))
    assert "views.x.embed.last:" in msg
    assert "order_by and limit apply to arrays" in msg


def test_parse_relation_empty_on_names_field() -> None:
    msg = parse_error(data(orders={**ORDERS, "on": {}}))
    assert "views.x.embed.orders.on" in msg
    assert "needs at least one column pair" in msg


@pytest.mark.parametrize(
    ("embed", "path", "table"),
    [
        (
            {"orders": {**ORDERS, "children": "public.missing"}},
            "views.x.embed.orders.children",
            "public.missing",
        ),
        (
            {
                "orders": {
                    **ORDERS,
                    "embed": {
                        "items": {"children": "public.lines", "on": {"order_id": "id"}}
                    },
                }
            },
            "views.x.embed.orders.embed.items.children",
            "public.lines",
        ),
        (
            {"tags": {**TAGS, "through": "public.links"}},
            "views.x.embed.tags.through",
            "public.links",
        ),
        (
            {"tags": {**TAGS, "many_to_many": "public.labels"}},
            "views.x.embed.tags.many_to_many",
            "public.labels",
        ),
    ],
)
def test_parse_table_not_in_source_tables_names_field_path(
    embed: dict[str, Any], path: str, table: str
) -> None:
    msg = parse_error(data(**embed))
    assert f"{path}: {table!r} is not in source.tables" in msg


def test_parse_root_table_not_in_source_tables_names_field_path() -> None:
    raw = data()
    raw["views"]["x"]["table"] = "public.nowhere"
    msg = parse_error(raw)
    assert "views.x.table: 'public.nowhere' is not in source.tables" in msg


def test_parse_where_with_semicolon_is_rejected() -> None:
    raw = data()
    raw["views"]["x"]["where"] = "true; DROP TABLE customers"
    msg = parse_error(raw)
    assert "views.x.where" in msg
    assert "one SQL predicate" in msg


# --- snapshot versions -------------------------------------------------------


def test_snapshot_version_higher_xmax_wins_over_fewer_in_progress() -> None:
    older = snapshot_version(0, 1_000, 0)
    newer = snapshot_version(0, 1_001, XIP_FACTOR - 1)
    assert newer > older


def test_snapshot_version_same_xmax_fewer_in_progress_wins() -> None:
    versions = [snapshot_version(0, 5_000, nxip) for nxip in (3, 2, 1, 0)]
    assert versions == sorted(versions)
    assert len(set(versions)) == 4


def test_snapshot_version_equal_snapshots_equal_versions() -> None:
    assert snapshot_version(2, 77, 4) == snapshot_version(2, 77, 4)
    assert Snapshot(77, 4).version(2) == snapshot_version(2, 77, 4)


def test_snapshot_version_epoch_dominates_any_snapshot() -> None:
    highest_of_epoch_0 = snapshot_version(0, XMAX_LIMIT - 1, 0)
    lowest_of_epoch_1 = snapshot_version(1, 0, XIP_FACTOR - 1)
    assert lowest_of_epoch_1 > highest_of_epoch_0
    assert lowest_of_epoch_1 == EPOCH_SPAN


def test_snapshot_version_orders_like_xmax_then_minus_nxip() -> None:
    pairs = [(x, n) for x in (0, 1, 2, 10**6, XMAX_LIMIT - 1) for n in (0, 1, 999)]
    by_version = sorted(pairs, key=lambda p: snapshot_version(3, *p))
    assert by_version == sorted(pairs, key=lambda p: (p[0], -p[1]))


def test_snapshot_version_fits_signed_64_bits() -> None:
    # Elasticsearch external versions and MongoDB numbers are signed 64-bit.
    assert snapshot_version(91, XMAX_LIMIT - 1, 0) < 2**63


@pytest.mark.parametrize(
    ("xmax", "nxip"),
    [(XMAX_LIMIT, 0), (-1, 0), (1, XIP_FACTOR), (1, -1)],
)
def test_snapshot_version_out_of_range_raises_value_error(xmax: int, nxip: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        snapshot_version(0, xmax, nxip)


# --- 64-bit xids -------------------------------------------------------------


def test_full_xid_first_epoch_is_unchanged() -> None:
    assert full_xid(700, 1_000) == 700
    assert full_xid(999, 1_000) == 999


def test_full_xid_after_wraparound_adds_epoch() -> None:
    xmax = 3 * 2**32 + 50  # epoch 3
    assert full_xid(10, xmax) == 3 * 2**32 + 10


def test_full_xid_before_wraparound_takes_previous_epoch() -> None:
    # xmax just wrapped into epoch 1; the xid was assigned late in epoch 0.
    xmax = 2**32 + 5
    assert full_xid(2**32 - 10, xmax) == 2**32 - 10
    assert full_xid(3, xmax) == 2**32 + 3


@pytest.mark.parametrize("xid32", [0, 1, 2**31, 2**32 - 1])
def test_full_xid_result_within_one_wrap_below_xmax(xid32: int) -> None:
    xmax = 7 * 2**32 + 123_456
    full = full_xid(xid32, xmax)
    assert full % 2**32 == xid32
    assert xmax - 2**32 < full <= xmax


def test_relation_bare_yaml_on_key_read_as_true_is_taken_as_on(tmp_path):
    text = """
source: {dsn: "postgresql://x/y", tables: [public.a, public.b]}
sinks: {cache: {type: redis}}
views:
  v:
    kind: aggregate
    table: public.a
    sinks: [cache]
    embed:
      bs:
        children: public.b
        on: {a_id: id}
"""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = config.load(path)
    assert cfg.views["v"].embed["bs"].on == {"a_id": "id"}
