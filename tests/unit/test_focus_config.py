"""Focuses in the config: derived views, their targets, and errors that name
the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline import config
from pipeline.errors import ConfigError
from pipeline.viewconfig import AggregateViewConfig, TableViewConfig

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
GOOD = yaml.safe_load((REPO / "readside.yaml").read_text())


def with_focuses(focuses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    data = copy.deepcopy(GOOD)
    data["focuses"] = focuses
    data.update(extra)
    return data


def parse_error(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        config.parse(data)
    return str(info.value)


def test_focus_aggregate_view_derives_view_with_anded_where_and_own_targets():
    data = with_focuses({"eu": {"view": "customers", "where": "country = 'DE'"}})
    data["views"]["customers"] = {
        "kind": "aggregate",
        "table": "public.customers",
        "where": "id > 0",
        "sinks": ["cache", "search"],
        "sink_options": {"cache": {"target": "shop:c", "indexes": {"x": "eq"}}},
    }
    cfg = config.parse(data)
    views = cfg.effective_views()
    assert list(views)[-1] == "customers.eu"
    derived = views["customers.eu"]
    assert isinstance(derived, AggregateViewConfig)
    assert derived.where == "(id > 0) AND (country = 'DE')"
    assert derived.sink_options["cache"].target == "shop:c.eu"
    assert derived.sink_options["cache"].model_extra == {"indexes": {"x": "eq"}}
    assert derived.sink_options["search"].target == "customers.eu"
    assert cfg.views["customers"].where == "id > 0"  # the base is unchanged
    assert cfg.focus_view("eu") == "customers.eu"
    assert "customers.eu" in cfg.view_topics()["shop.public.customers"]


def test_focus_table_view_ands_expression_with_base_filter():
    data = with_focuses({"big": {"view": "orders", "where": "total > 100"}})
    data["views"]["orders"] = {
        **data["views"]["orders"],
        "kind": "table",
        "filter": "status != 'draft'",
    }
    derived = config.parse(data).effective_views()["orders.big"]
    assert isinstance(derived, TableViewConfig)
    assert derived.filter == "(status != 'draft') and (total > 100)"


def test_focus_two_focuses_of_one_view_get_distinct_targets():
    data = with_focuses(
        {
            "eu": {"view": "customers", "where": "true"},
            "us": {"view": "customers", "where": "true", "targets": {"cache": "us"}},
        }
    )
    views = config.parse(data).effective_views()
    eu, us = views["customers.eu"], views["customers.us"]
    assert eu.sink_options["cache"].target != us.sink_options["cache"].target
    assert us.sink_options["cache"].target == "us"


@pytest.mark.parametrize(
    ("focuses", "field", "says"),
    [
        ({"eu": {"view": "nope", "where": "x"}}, "focuses.eu.view", "unknown view"),
        (
            {"eu": {"view": "customers", "where": "x", "targets": {"nowhere": "t"}}},
            "focuses.eu.targets",
            "'nowhere' is not a sink",
        ),
        ({"EU": {"view": "customers", "where": "x"}}, "focuses.EU", "lower-case"),
        ({"e.u": {"view": "customers", "where": "x"}}, "focuses.e.u", "lower-case"),
        (
            {"eu": {"view": "customers", "where": "x", "targets": {"search": "A b"}}},
            "focuses.eu.targets.search",
            "Elasticsearch",
        ),
        (
            {
                "eu": {
                    "view": "customers",
                    "where": "x",
                    "targets": {"cache": "customers"},
                }
            },
            "focuses",
            "share the store location",
        ),
        (
            {
                "eu": {
                    "view": "customers",
                    "where": "x",
                    "targets": {"cache": "customers:x"},
                }
            },
            "focuses",
            "share the store location",
        ),
        ({"eu": {"view": "customers", "where": ""}}, "focuses.eu.where", "at least 1"),
        (
            {"eu": {"view": "customers", "where": "x", "bad": 1}},
            "focuses.eu.bad",
            "Extra",
        ),
    ],
)
def test_focus_bad_definition_error_names_field(focuses, field, says):
    msg = parse_error(with_focuses(focuses))
    assert f"{field}" in msg
    assert says in msg


def test_focus_aggregate_where_with_semicolon_is_refused():
    data = with_focuses({"eu": {"view": "customers", "where": "true; drop table x"}})
    data["views"]["customers"] = {**data["views"]["customers"], "kind": "aggregate"}
    data["views"]["customers"].pop("filter", None)
    assert "focuses.eu.where: must be one SQL predicate" in parse_error(data)


def test_focus_table_where_must_be_an_expression():
    data = with_focuses({"eu": {"view": "orders", "where": "total >"}})
    assert "focuses.eu.where" in parse_error(data)


def test_focus_derived_name_taken_by_a_view_is_refused():
    data = with_focuses({"eu": {"view": "customers", "where": "true"}})
    data["views"]["customers.eu"] = copy.deepcopy(data["views"]["orders"])
    data["views"]["customers.eu"]["sink_options"] = {
        s: {"target": "other"} for s in data["views"]["orders"]["sinks"]
    }
    assert "'customers.eu' is already a view" in parse_error(data)


def test_focus_api_key_bound_to_unknown_focus_names_key():
    key = {"name": "site", "key": "k" * 20, "views": ["*"], "focus": "mars"}
    data = with_focuses(
        {"eu": {"view": "customers", "where": "true"}}, api={"keys": [key]}
    )
    msg = parse_error(data)
    assert "api.keys[site].focus: unknown focus 'mars'" in msg


def test_focus_unknown_focus_view_lookup_raises_config_error():
    cfg = config.parse(with_focuses({}))
    with pytest.raises(ConfigError, match="unknown focus 'eu'"):
        cfg.focus_view("eu")
    assert cfg.effective_views().keys() == cfg.views.keys()


def test_focus_previous_definitions_are_checked_like_where():
    data = with_focuses(
        {
            "eu": {
                "view": "customers",
                "where": "country = 'DE'",
                "previous": ["country = 'FR'", "true; DROP TABLE customers"],
            }
        }
    )
    data["views"]["customers"] = {
        "kind": "aggregate",
        "table": "public.customers",
        "sinks": ["cache"],
    }
    assert "focuses.eu.previous[1]: must be one SQL predicate" in parse_error(data)


def test_focus_apply_runs_only_definitions_the_config_writes():
    from pipeline.snapshot.focus import FocusApply

    data = with_focuses(
        {
            "eu": {
                "view": "customers",
                "where": "country = 'DE'",
                "previous": ["country IN ('DE', 'FR')"],
            }
        }
    )
    data["views"]["customers"] = {
        "kind": "aggregate",
        "table": "public.customers",
        "where": "id > 0",
        "sinks": ["cache"],
    }
    apply = FocusApply(config.parse(data), "eu", lambda _st: None)
    wide = "(id > 0) AND (country IN ('DE', 'FR'))"
    assert apply.trusted(wide) == wide
    assert apply.trusted(apply.definition()) == apply.definition()
    # Anything else recorded (another text, the base filter changed since, a
    # planted one) is not run: the apply loads the whole slice.
    assert apply.trusted("country IN ('DE', 'FR')") is None
    assert apply.trusted("(id > 0) AND (true) OR pg_sleep(10) IS NULL") is None
    assert apply.trusted(None) is None
