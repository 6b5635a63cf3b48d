"""An aggregate view's ``where`` must read its root row and nothing else.

A root enters or leaves a view only when the worker reads it again, and it
reads a root again only when a row of the view's tables changes
(:mod:`pipeline.aggregate.roots`). A ``where`` whose answer moves without
such a change would leave documents as they were, for good, with the lag
at zero and nothing said; ``readside verify`` is the only place the drift
shows. So a ``where`` is refused at start (naming the field) when it:

- reads the clock: ``now()``, ``current_date`` and its kin, ``age(x)``, or a
  literal PostgreSQL turns into a time (``'now'``, ``'today'``, ...):
  ``placed_at > now() - interval '30 days'`` keeps every order it ever took;
- reads other rows: a subquery (on another table, or on the root's own
  table), or a function declared ``STABLE`` outside ``pg_catalog`` (that
  is what a function reading tables is declared);
- calls a ``VOLATILE`` function (``random()``, ``nextval()``, ...).

PostgreSQL decides what it can: the functions' volatility comes from
``pg_proc``; subqueries from the plan of ``SELECT 1 FROM root WHERE ...``
(every relation the plan scans); a time literal is one that no longer
appears quoted in that plan (PostgreSQL turned it into a timestamp, while
``status <> 'today'`` keeps its text). The text is only scanned for the
names it calls and the SQL keywords that read the clock.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from pipeline.errors import ConfigError

#: SQL keywords that read the clock (no parentheses needed).
CLOCK_KEYWORDS = frozenset(
    {"current_date", "current_time", "current_timestamp", "localtime", "localtimestamp"}
)
#: ``pg_catalog`` functions declared STABLE that read the clock (the
#: volatile ones, ``clock_timestamp()`` and ``timeofday()``, are refused as
#: volatile); ``age`` reads it with one argument only.
CLOCK_FUNCTIONS = frozenset({"now", "transaction_timestamp", "statement_timestamp"})
#: Literals PostgreSQL's date/time input reads as the clock's time.
CLOCK_WORDS = frozenset({"now", "today", "tomorrow", "yesterday"})

_IDENT = re.compile(r"[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*")
_DOLLAR = re.compile(r"\$([A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$")


@dataclass(frozen=True)
class Call:
    """A name the text calls: ``schema.name(...)`` with ``args`` arguments."""

    name: str
    schema: str | None
    args: int


@dataclass
class Scanned:
    """What :func:`scan` found in a predicate's text."""

    calls: list[Call] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)
    #: the values of its string literals
    literals: list[str] = field(default_factory=list)


def _quoted(text: str, start: int, quote: str, backslash: bool) -> tuple[str, int]:
    """The value of the quoted token opening at ``start`` and the index past it."""
    out, i = [], start + 1
    while i < len(text):
        ch = text[i]
        if backslash and ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
            continue
        if ch == quote:
            if text.startswith(quote, i + 1):
                out.append(quote)
                i += 2
                continue
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    return "".join(out), i


def _tokens(text: str) -> list[tuple[str, str]]:
    """(kind, value) of each token: ``name`` (lower-cased), ``quoted`` (a
    quoted name), ``string``, the punctuation ``(``, ``)``, ``,``, ``.``, or
    ``other`` (a character of a number or an operator); comments are
    dropped."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("--", i):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < len(text) and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif ch == "'":
            value, i = _quoted(text, i, "'", backslash=False)
            out.append(("string", value))
        elif ch in "eE" and text.startswith("'", i + 1):
            value, i = _quoted(text, i + 1, "'", backslash=True)
            out.append(("string", value))
        elif ch == '"':
            value, i = _quoted(text, i, '"', backslash=False)
            out.append(("quoted", value))
        elif m := _DOLLAR.match(text, i):
            end = text.find(m.group(0), m.end())
            end = len(text) if end < 0 else end
            out.append(("string", text[m.end() : end]))
            i = end + len(m.group(0))
        elif m := _IDENT.match(text, i):
            out.append(("name", m.group(0).lower()))
            i = m.end()
        elif ch in "(),.":
            out.append((ch, ch))
            i += 1
        else:
            out.append(("other", ch))
            i += 1
    return out


def _arguments(tokens: list[tuple[str, str]], opening: int) -> int:
    """How many arguments the parenthesis at ``opening`` holds."""
    depth, commas, empty = 0, 0, True
    for kind, _ in tokens[opening:]:
        if kind == "(":
            depth += 1
        elif kind == ")":
            depth -= 1
            if depth == 0:
                break
        elif depth == 1 and kind == ",":
            commas += 1
        elif depth >= 1:
            empty = False
    return 0 if empty and not commas else commas + 1


def scan(text: str) -> Scanned:
    """The calls, clock keywords and string literals of SQL ``text``."""
    tokens = _tokens(text)
    found = Scanned()
    for n, (kind, value) in enumerate(tokens):
        if kind == "string":
            found.literals.append(value)
            continue
        if kind not in ("name", "quoted"):
            continue
        if kind == "name" and value in CLOCK_KEYWORDS:
            found.keywords.append(value)
            continue
        if n + 1 < len(tokens) and tokens[n + 1][0] == "(":
            named = n >= 2 and tokens[n - 2][0] in ("name", "quoted")
            dotted = named and tokens[n - 1][0] == "."
            schema = tokens[n - 2][1] if dotted else None
            found.calls.append(Call(value, schema, _arguments(tokens, n + 1)))
    return found


def _scans(plan: Any) -> list[tuple[str, str]]:
    """(``schema.name``, alias) of every relation a JSON plan scans."""
    out: list[tuple[str, str]] = []
    if isinstance(plan, dict):
        if "Relation Name" in plan:
            name = f"{plan.get('Schema', '')}.{plan['Relation Name']}"
            out.append((name, str(plan.get("Alias", ""))))
        for value in plan.values():
            out += _scans(value)
    elif isinstance(plan, list):
        for value in plan:
            out += _scans(value)
    return out


def _sql_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def problem(
    conn: psycopg.Connection[Any], root_table: str, alias: str, where: str
) -> str | None:
    """Why ``where`` (on ``root_table`` as ``alias``) may change its answer
    for a root whose rows did not change, or None."""
    scanned = scan(where)
    if scanned.keywords:
        return f"reads the clock ({scanned.keywords[0].upper()})"
    for call in scanned.calls:
        if call.schema in (None, "pg_catalog") and (
            call.name in CLOCK_FUNCTIONS or (call.name == "age" and call.args == 1)
        ):
            return f"reads the clock ({call.name}())"
    schema, table = root_table.split(".", 1)
    explained = sql.SQL(
        "EXPLAIN (VERBOSE, FORMAT JSON) SELECT 1 FROM {} AS {} WHERE ({})"
    ).format(
        sql.Identifier(schema, table),
        sql.Identifier(alias),
        sql.SQL(where),  # operator-written SQL from the config, as in ViewSQL
    )
    with conn.transaction(), conn.cursor() as cur:
        row = cur.execute(explained).fetchone()
        plan = row[0] if row else []
        plan = json.loads(plan) if isinstance(plan, str) else plan
        names = sorted({c.name for c in scanned.calls})
        # a partitioned root is scanned partition by partition
        tree = cur.execute(
            "SELECT n.nspname || '.' || c.relname "
            "FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace",
            [sql.Identifier(schema, table).as_string(conn)],
        ).fetchall()
        procs = cur.execute(
            "SELECT p.proname, n.nspname, p.provolatile "
            "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
            "WHERE p.proname = ANY(%s)",
            [names],
        ).fetchall()
    root = {root_table, *(r for (r,) in tree)}
    own = re.compile(re.escape(alias) + r"(_\d+)?")
    scans = _scans(plan)
    others = sorted({r for r, a in scans if r not in root or not own.fullmatch(a)})
    if others:
        read = ", ".join(others)
        return (
            f"reads other rows ({read}, in a subquery), whose changes do not "
            "read this root again"
        )
    for call in scanned.calls:
        found = [
            (nsp, volatile)
            for name, nsp, volatile in procs
            if name == call.name and call.schema in (None, nsp)
        ]
        named = f"{call.schema}.{call.name}" if call.schema else call.name
        if any(v == "v" for _, v in found):
            return f"calls {named}(), which is VOLATILE"
        if any(v == "s" and nsp != "pg_catalog" for nsp, v in found):
            return (
                f"calls {named}(), declared STABLE (it may read other rows; "
                "if it reads only its arguments, declare it IMMUTABLE)"
            )
    text = json.dumps(plan, ensure_ascii=False)
    for word in scanned.literals:
        if word.strip().lower() in CLOCK_WORDS and _sql_literal(word) not in text:
            return f"reads the clock (the literal {_sql_literal(word)}, a time)"
    return None


def check(
    conn: psycopg.Connection[Any], view: str, root_table: str, alias: str, where: str
) -> None:
    """Refuse a ``where`` of view ``view`` that reads more than its root row.

    Raises:
        ConfigError: naming ``views.<view>.where``, what it reads and why.
    """
    try:
        why = problem(conn, root_table, alias, where)
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:
        raise ConfigError(
            f"views.{view}.where: PostgreSQL refuses {where!r}: "
            f"{exc.diag.message_primary or exc}"
        ) from None
    if why is None:
        return
    raise ConfigError(
        f"views.{view}.where: {where!r} {why}. A root enters or leaves the view "
        "only when a row of its tables changes, so documents would stay as they "
        "are when its answer moves; filter on the root's own columns (e.g. a "
        "flag the application or a scheduled job sets)"
    )
