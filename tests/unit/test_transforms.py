from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import BadRecord, ConfigError, TransientError
from pipeline.events import UNCHANGED
from pipeline.viewconfig import TransformConfig
from transforms.chain import Chain, Step, build_chain

pytestmark = pytest.mark.unit

FIXTURES = Path(__file__).parent.parent / "fixtures"

DOC: dict[str, Any] = {
    "id": 1,
    "first_name": "Ada",
    "last_name": "Lovelace",
    "name": "ada",
    "tenant": "acme",
    "price": "12.50",
    "active": "yes",
    "born": "1815-12-10T08:00:00+01:00",
    "body": UNCHANGED,
    "middle": None,
}


@pytest.fixture
def user_module(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(FIXTURES))
    return "user_transforms"


def chain(*steps: dict[str, Any]) -> Chain:
    return build_chain([TransformConfig(**s) for s in steps])


def run(doc: dict[str, Any], *steps: dict[str, Any]) -> dict[str, Any] | None:
    original = copy.deepcopy(doc)
    out = chain(*steps)(doc)
    assert doc == original, "the chain modified its input"
    return out


# --- built-ins -------------------------------------------------------------


def test_rename_mapping_renames_fields_in_place() -> None:
    out = run({"a": 1, "b": 2}, {"type": "rename", "fields": {"a": "x"}})
    assert out == {"x": 1, "b": 2}
    assert list(out) == ["x", "b"]


def test_rename_onto_existing_field_replaces_it() -> None:
    assert run({"b": 0, "a": 1}, {"type": "rename", "fields": {"a": "b"}}) == {"b": 1}


def test_rename_swap_exchanges_values() -> None:
    out = run({"a": 1, "b": 2}, {"type": "rename", "fields": {"a": "b", "b": "a"}})
    assert out == {"b": 1, "a": 2}


def test_rename_missing_field_is_ignored() -> None:
    assert run({"a": 1}, {"type": "rename", "fields": {"z": "y"}}) == {"a": 1}


def test_drop_fields_removes_them() -> None:
    out = run(DOC, {"type": "drop", "fields": ["body", "middle", "nope"]})
    assert out is not None
    assert "body" not in out
    assert "middle" not in out
    assert out["id"] == 1


def test_include_fields_keeps_only_them() -> None:
    out = run(DOC, {"type": "include", "fields": ["id", "tenant", "nope"]})
    assert out == {"id": 1, "tenant": "acme"}


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("int", "42", 42),
        ("int", "42.00", 42),
        ("int", 3.0, 3),
        ("int", True, 1),
        ("float", "1.5", 1.5),
        ("float", "NaN", "NaN"),
        ("str", 12, "12"),
        ("str", True, "true"),
        ("str", {"b": 1, "a": [1]}, '{"a":[1],"b":1}'),
        ("bool", "yes", True),
        ("bool", "F", False),
        ("bool", 0, False),
        ("decimal", "1E-8", "0.00000001"),
        ("decimal", 12, "12"),
        ("decimal", 0.1, "0.1"),
        ("iso-date", "1815-12-10T23:30:00-05:00", "1815-12-11"),
        ("iso-date", "2024-03-01", "2024-03-01"),
        ("iso-datetime", "2024-03-01T10:00:00+02:00", "2024-03-01T08:00:00+00:00"),
        ("iso-datetime", "2024-03-01 10:00:00", "2024-03-01T10:00:00+00:00"),
        ("iso-datetime", "2024-03-01", "2024-03-01T00:00:00+00:00"),
    ],
)
def test_cast_field_to_type_converts_value(
    kind: str, value: Any, expected: Any
) -> None:
    out = run({"v": value}, {"type": "cast", "fields": {"v": kind}})
    assert out == {"v": expected}


def test_cast_null_and_unchanged_values_pass_through() -> None:
    out = run(DOC, {"type": "cast", "fields": {"middle": "int", "body": "str"}})
    assert out is not None
    assert out["middle"] is None
    assert out["body"] is UNCHANGED


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("int", "12.5"),
        ("int", "abc"),
        ("float", [1]),
        ("bool", "maybe"),
        ("decimal", "twelve"),
        ("iso-date", "yesterday"),
        ("iso-datetime", 12),
    ],
)
def test_cast_impossible_value_raises_bad_record(kind: str, value: Any) -> None:
    with pytest.raises(
        BadRecord, match=r"transforms\[0\] \(cast\): cannot cast"
    ) as info:
        run({"v": value}, {"type": "cast", "fields": {"v": kind}})
    assert info.value.reason == "transform"


def test_compute_template_joins_fields_and_renders_null_empty() -> None:
    out = run(
        DOC,
        {
            "type": "compute",
            "field": "full_name",
            "template": "{first_name} {middle}{last_name} ({tenant}) {{x}}",
        },
    )
    assert out is not None
    assert out["full_name"] == "Ada Lovelace (acme) {x}"


def test_compute_expression_sets_field_with_json_value() -> None:
    out = run(
        {"price": "12.50", "qty": 3},
        {"type": "compute", "field": "total", "expression": "decimal(price) * qty"},
    )
    assert out == {"price": "12.50", "qty": 3, "total": "37.50"}


def test_compute_template_reading_unchanged_field_raises_bad_record() -> None:
    with pytest.raises(BadRecord, match="unchanged TOASTed"):
        run(DOC, {"type": "compute", "field": "x", "template": "{body}"})


def test_compute_template_missing_field_raises_bad_record() -> None:
    with pytest.raises(BadRecord, match="'nope' is missing"):
        run(DOC, {"type": "compute", "field": "x", "template": "{nope}"})


def test_filter_true_expression_keeps_document() -> None:
    out = run(DOC, {"type": "filter", "expression": "tenant in ['acme']"})
    assert out == DOC


def test_filter_false_expression_drops_document_and_stops_chain(
    user_module: str,
) -> None:
    steps = (
        {"type": "filter", "expression": "tenant == 'other'"},
        {"type": "python", "path": f"{user_module}:explode"},
    )
    assert run(DOC, *steps) is None


def test_chain_applies_steps_in_order() -> None:
    out = run(
        DOC,
        {"type": "rename", "fields": {"first_name": "given"}},
        {"type": "compute", "field": "greeting", "template": "Hi {given}"},
        {"type": "include", "fields": ["id", "greeting"]},
    )
    assert out == {"id": 1, "greeting": "Hi Ada"}


def test_chain_empty_returns_document_unchanged() -> None:
    assert build_chain([])(DOC) == DOC


# --- configuration errors --------------------------------------------------


@pytest.mark.parametrize(
    ("steps", "fragments"),
    [
        ([{"type": "nope"}], ["transforms[0] (nope)", "unknown transform type"]),
        (
            [{"type": "drop", "fields": ["a"]}, {"type": "rename"}],
            ["transforms[1] (rename)", "field fields"],
        ),
        ([{"type": "rename", "fields": {"a": "x", "b": "x"}}], ["distinct"]),
        ([{"type": "drop", "fields": []}], ["field fields"]),
        ([{"type": "drop", "fields": ["a"], "extra": 1}], ["field extra"]),
        ([{"type": "cast", "fields": {"a": "complex"}}], ["field fields.a"]),
        ([{"type": "compute", "field": "x"}], ["exactly one"]),
        (
            [{"type": "compute", "field": "x", "template": "{a.b}"}],
            ["field template", "plain field name"],
        ),
        ([{"type": "compute", "field": "x", "template": "{a!r}"}], ["plain field"]),
        ([{"type": "compute", "field": "x", "template": "{a:>10}"}], ["plain field"]),
        ([{"type": "compute", "field": "x", "template": "{}"}], ["plain field"]),
        ([{"type": "compute", "field": "x", "template": "{a"}], ["template"]),
        (
            [{"type": "compute", "field": "x", "expression": "a."}],
            ["field expression", "invalid syntax"],
        ),
        (
            [{"type": "filter", "expression": "__import__('os')"}],
            ["transforms[0] (filter)", "field expression"],
        ),
        ([{"type": "filter"}], ["field expression"]),
    ],
)
def test_build_chain_bad_step_raises_config_error_naming_step(
    steps: list[dict[str, Any]], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as info:
        chain(*steps)
    for fragment in fragments:
        assert fragment in str(info.value)


# --- user transforms -------------------------------------------------------


def test_python_plain_function_by_path_transforms(user_module: str) -> None:
    out = run({"name": "ada"}, {"type": "python", "path": f"{user_module}:shout"})
    assert out == {"name": "ADA"}


def test_python_function_factory_gets_options(user_module: str) -> None:
    step = {
        "type": "python",
        "path": f"{user_module}:add_field",
        "name": "x",
        "value": 5,
    }
    assert run({"a": 1}, step) == {"a": 1, "x": 5}


def test_python_class_factory_gets_options(user_module: str) -> None:
    step = {"type": "python", "path": f"{user_module}:Prefixer", "prefix": "Dr. "}
    assert run({"name": "Ada"}, step) == {"name": "Dr. Ada"}


def test_python_mutating_user_transform_leaves_input_intact(user_module: str) -> None:
    out = run({"a": 1}, {"type": "python", "path": f"{user_module}:mutate"})
    assert out == {"a": 1, "mutated": True}


def test_python_user_transform_returning_none_drops(user_module: str) -> None:
    assert run({"a": 1}, {"type": "python", "path": f"{user_module}:drop_all"}) is None


def test_python_user_transform_raising_becomes_bad_record(user_module: str) -> None:
    with pytest.raises(BadRecord) as info:
        run({"id": 9}, {"type": "python", "path": f"{user_module}:explode"})
    assert info.value.reason == "transform"
    assert str(info.value) == "transforms[0] (python): RuntimeError: boom on 9"


def test_python_user_transform_bad_return_raises_bad_record(user_module: str) -> None:
    with pytest.raises(BadRecord, match="returned int, expected a dict or None"):
        run({"a": 1}, {"type": "python", "path": f"{user_module}:bad_return"})


def test_chain_transient_error_from_step_passes_through() -> None:
    def flaky(doc: dict[str, Any]) -> dict[str, Any]:
        raise TransientError("lookup service down")

    with pytest.raises(TransientError):
        Chain([Step("transforms[0] (python)", flaky, user=True)])({"a": 1})


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({}, "field path"),
        ({"path": "no_colon"}, "field path"),
        ({"path": "os:system; rm"}, "field path"),
        ({"path": "readside_no_such_module:f"}, "cannot import"),
        ({"path": "{mod}:nope"}, "has no attribute"),
        ({"path": "{mod}:NOT_CALLABLE"}, "is not callable"),
        ({"path": "{mod}:shout", "x": 1}, "takes no options"),
        ({"path": "{mod}:Prefixer"}, "rejected its options"),
        ({"path": "{mod}:add_field"}, "rejected its options"),
    ],
)
def test_python_bad_path_or_options_raises_config_error(
    user_module: str, options: dict[str, Any], fragment: str
) -> None:
    if "path" in options:
        options = {**options, "path": options["path"].format(mod=user_module)}
    with pytest.raises(ConfigError, match=r"transforms\[0\] \(python\)") as info:
        chain({"type": "python", **options})
    assert fragment in str(info.value)


@pytest.fixture
def entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, user_module: str
) -> None:
    dist = tmp_path / "readside_test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: readside-test-plugins\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[readside.transforms]\n"
        f"shout = {user_module}:shout\n"
        f"prefix = {user_module}:Prefixer\n"
        "broken = readside_no_such_module:f\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))


@pytest.mark.usefixtures("entry_points")
def test_entry_point_plain_function_by_name_transforms() -> None:
    assert run({"name": "ada"}, {"type": "shout"}) == {"name": "ADA"}


@pytest.mark.usefixtures("entry_points")
def test_entry_point_factory_gets_options() -> None:
    out = run({"name": "Ada"}, {"type": "prefix", "prefix": "Ms. "})
    assert out == {"name": "Ms. Ada"}


@pytest.mark.usefixtures("entry_points")
def test_entry_point_unknown_name_lists_known_types() -> None:
    with pytest.raises(ConfigError, match="unknown transform type 'shoutx'") as info:
        chain({"type": "shoutx"})
    assert "shout" in str(info.value)
    assert "rename" in str(info.value)


@pytest.mark.usefixtures("entry_points")
def test_entry_point_failing_import_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"transforms\[0\] \(broken\): .*cannot load"):
        chain({"type": "broken"})
