from __future__ import annotations

from typing import Any

import pytest

from pipeline.errors import BadRecord, ConfigError
from pipeline.events import UNCHANGED
from transforms.expr import compile_expression

pytestmark = pytest.mark.unit

DOC: dict[str, Any] = {
    "id": 7,
    "name": "Ada",
    "tenant": "acme",
    "price": "12.50",
    "qty": 3,
    "tags": ["x", "y"],
    "data": {"k": {"n": 1}},
    "nickname": None,
    "body": UNCHANGED,
    "first-name": "Ada",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("qty * 2 + 1", 7),
        ("qty / 2", 1.5),
        ("qty // 2", 1),
        ("qty % 2", 1),
        ("-qty", -3),
        ("tenant == 'acme'", True),
        ("tenant in ['acme', 'globex']", True),
        ("tenant not in ('acme',)", False),
        ("1 < qty <= 3", True),
        ("1 < qty < 3", False),
        ("qty > 1 and name == 'Ada'", True),
        ("qty > 5 or name", "Ada"),
        ("not nickname", True),
        ("nickname is None", True),
        ("nickname is not None", False),
        ("lower(name)", "ada"),
        ("upper(name)", "ADA"),
        ("strip('  a ')", "a"),
        ("len(tags)", 2),
        ("tags[0]", "x"),
        ("data['k']['n']", 1),
        ("str(qty) + '!'", "3!"),
        ("int('42')", 42),
        ("float(price) > 10", True),
        ("decimal(price) * qty", __import__("decimal").Decimal("37.50")),
        ("round(2.567, 2)", 2.57),
        ("abs(-2)", 2),
        ("min(qty, 2)", 2),
        ("max(1, 2, qty)", 3),
        ("coalesce(nickname, name)", "Ada"),
        ("get('first-name')", "Ada"),
        ("get('missing', 'dflt')", "dflt"),
        ("'big' if qty > 2 else 'small'", "big"),
        ("{1, 2} == {2, 1}", True),
        ("bool(0)", False),
    ],
)
def test_expression_valid_text_evaluates(text: str, expected: Any) -> None:
    assert compile_expression(text).evaluate(DOC) == expected


def test_expression_fields_lists_names_read() -> None:
    expr = compile_expression("tenant == 'acme' and qty > lower(name)")
    assert expr.fields == frozenset({"tenant", "qty", "name"})


def test_expression_evaluate_does_not_mutate_document() -> None:
    doc = {"tags": ["a"], "n": 1}
    compile_expression("tags + ['b']").evaluate(doc)
    assert doc == {"tags": ["a"], "n": 1}


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "name.__class__",
        "name.upper()",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        "[x for x in tags]",
        "{k: 1 for k in tags}",
        "(x := 1)",
        "qty ** 1000",
        "qty << 2",
        "~qty",
        "open('/etc/passwd')",
        "eval('1')",
        "exec('x=1')",
        "getattr(name, 'upper')",
        "globals()",
        "__builtins__",
        "tags[0:1]",
        "f'{name}'",
        "lower(s=name)",
        "lower(*tags)",
        "b'bytes'",
        "1j",
        "...",
        "lower",
        "await x",
        "name; 1",
        "import os",
        "",
        "   ",
        "x" * 5000,
        "[" * 1000 + "]" * 1000,
        "-" * 3000 + "1",
    ],
)
def test_compile_expression_unsafe_or_invalid_text_raises_config_error(
    text: str,
) -> None:
    with pytest.raises(ConfigError):
        compile_expression(text)


def test_compile_expression_unknown_function_lists_known() -> None:
    with pytest.raises(ConfigError, match=r"unknown function 'system'.*coalesce"):
        compile_expression("system('ls')")


def test_compile_expression_syntax_error_names_expression() -> None:
    with pytest.raises(ConfigError, match=r"'qty >'.*invalid syntax"):
        compile_expression("qty >")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("missing == 1", "unknown field 'missing'"),
        ("qty / 0", "ZeroDivisionError"),
        ("name > 3", "TypeError"),
        ("tags[5]", "IndexError"),
        ("data['nope']", "KeyError"),
        ("int('abc')", "ValueError"),
        ("name * 1000", "repeating strings"),
        ("tags * 2", "repeating strings"),
        ("get(5)", "field name must be a string"),
    ],
)
def test_expression_evaluate_failure_raises_bad_record(
    text: str, fragment: str
) -> None:
    with pytest.raises(BadRecord) as info:
        compile_expression(text).evaluate(DOC)
    assert info.value.reason == "transform"
    assert fragment in str(info.value)


@pytest.mark.parametrize("text", ["len(body) > 3", "get('body') == 'x'"])
def test_expression_reading_unchanged_field_raises_bad_record(text: str) -> None:
    with pytest.raises(BadRecord, match="unchanged TOASTed column") as info:
        compile_expression(text).evaluate(DOC)
    assert info.value.reason == "transform"


def test_expression_not_reading_unchanged_field_evaluates() -> None:
    assert compile_expression("qty == 3").evaluate(DOC) is True
