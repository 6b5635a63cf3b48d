"""What :func:`pipeline.aggregate.rootfilter.scan` finds in a ``where``: the
names it calls, the clock keywords, the string literals, and nothing inside
strings, quoted names or comments (PostgreSQL decides the rest:
tests/integration/test_root_filter.py)."""

from __future__ import annotations

from pipeline.aggregate.rootfilter import Call, scan


def test_calls_with_their_schema_and_arguments() -> None:
    found = scan("wp.vip(id) AND age(placed) < age(a, b) AND now() > x AND f(g(1, 2))")
    assert found.calls == [
        Call("vip", "wp", 1),
        Call("age", None, 1),
        Call("age", None, 2),
        Call("now", None, 0),
        Call("f", None, 1),
        Call("g", None, 2),
    ]


def test_names_are_folded_unless_quoted() -> None:
    found = scan('NOW() OR "Odd"(x)')
    assert found.calls == [Call("now", None, 0), Call("Odd", None, 1)]


def test_clock_keywords_outside_strings_only() -> None:
    found = scan("due >= Current_Date AND note <> 'current_date' -- localtime\n")
    assert found.keywords == ["current_date"]
    assert found.literals == ["current_date"]


def test_literals_of_every_quoting() -> None:
    found = scan("a = 'it''s' OR b = E'now\\'s' OR c = $$today$$ OR d = $t$ x $t$")
    assert found.literals == ["it's", "now's", "today", " x "]


def test_nothing_inside_comments_strings_or_quoted_names() -> None:
    found = scan("/* now() /* nested */ random() */ \"now()\" = 'random()' -- now()")
    assert found.calls == []
    assert found.keywords == []
    assert found.literals == ["random()"]


def test_a_positional_dollar_is_no_quote() -> None:
    assert scan("a$b(1) = $1 AND now()").calls == [
        Call("a$b", None, 1),
        Call("now", None, 0),
    ]


def test_a_quoted_name_is_never_a_keyword() -> None:
    found = scan('"localtime" > 3 AND "Sch"."f"(1) AND s.g()')
    assert found.keywords == []
    assert found.calls == [Call("f", "Sch", 1), Call("g", "s", 0)]
