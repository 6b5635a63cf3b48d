"""Which table-view events :class:`pipeline.toast.SourceRows` reads values
for: images holding unchanged TOAST placeholders, and images lacking a
generated column (pgoutput streams none), whose columns it reads from the
catalog once per table and again after ``GENERATED_TTL_S``. The source reads
themselves run on the stack (tests/integration/test_generated_columns.py,
test_toast_compaction.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from pipeline.errors import ConfigError, TransientError
from pipeline.events import UNCHANGED, ChangeEvent, Op, Position
from pipeline.toast import GENERATED_TTL_S, SourceRows

pytestmark = pytest.mark.unit


class CatalogReader:
    """A Reader whose only table with a generated column is public.lines."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.down = False
        self.generated = {"public.lines": ["total"]}
        self.hidden: set[str] = set()

    @contextmanager
    def read(self, txids: Any = ()) -> Iterator[None]:
        if self.down:
            raise TransientError("source not reachable")
        yield

    def query(self, statement: Any, params: dict[str, Any]) -> list[Any]:
        self.asked.append(list(params["tables"]))
        return [(t, c) for t in params["tables"] for c in self.generated.get(t, [])]

    def connection(self) -> Any:
        return self

    def execute(self, query: str, params: Any = None) -> Any:
        """The catalog of connectors.rowsecurity: no policy hides a row,
        unless ``hidden`` says so."""
        rows = [("reader",)] if "current_user" in query else []
        if "pg_policy" in query:
            rows = [(t,) for t in params["tables"] if t in self.hidden]
        return type(
            "Cursor", (), {"fetchall": lambda _s: rows, "fetchone": lambda _s: rows[0]}
        )()


def change(table: str, offset: int, **after: Any) -> ChangeEvent:
    return ChangeEvent(
        table,
        Op.UPDATE,
        {"id": offset},
        None,
        {"id": offset, **after},
        1000 + offset,
        1,
        7,
        Position("t", 0, offset),
    )


def rows(reader: CatalogReader, now: list[float]) -> SourceRows:
    return SourceRows(reader, clock=lambda: now[0])  # type: ignore[arg-type]


def test_an_image_lacking_a_generated_column_is_read_with_a_placeholder() -> None:
    reader, now = CatalogReader(), [0.0]
    events = [
        change("public.lines", 1, qty=2),  # streamed: no total
        change("public.lines", 2, qty=2, total=4),  # the initial snapshot's read
        change("public.docs", 3, body="x"),
        change("public.docs", 4, body=UNCHANGED),
    ]
    lacking = rows(reader, now).lacking(events)
    assert [ev.position.offset for ev in lacking] == [1, 4]
    assert lacking[0].after == {"id": 1, "qty": 2, "total": UNCHANGED}
    assert lacking[1] is events[3]
    assert reader.asked == [["public.docs", "public.lines"]]


def test_generated_columns_are_read_once_per_table_then_again_after_the_ttl() -> None:
    reader, now = CatalogReader(), [0.0]
    source = rows(reader, now)
    source.lacking([change("public.lines", 1, qty=2)])
    now[0] = GENERATED_TTL_S / 2
    source.lacking([change("public.lines", 2, qty=2), change("public.docs", 3)])
    assert reader.asked == [["public.lines"], ["public.docs"]]
    # a migration made docs.size generated: seen once the TTL ran out
    reader.generated["public.docs"] = ["size"]
    assert source.lacking([change("public.docs", 4, body="x")]) == []
    now[0] = GENERATED_TTL_S * 1.5 + 1
    (ev,) = source.lacking([change("public.docs", 5, body="x")])
    assert ev.after == {"id": 5, "body": "x", "size": UNCHANGED}
    assert reader.asked[2:] == [["public.docs"]]


def test_an_outage_keeps_the_columns_read_before_and_refuses_unknown_tables() -> None:
    reader, now = CatalogReader(), [0.0]
    source = rows(reader, now)
    source.lacking([change("public.lines", 1, qty=2)])
    reader.down = True
    now[0] = GENERATED_TTL_S + 1
    (ev,) = source.lacking([change("public.lines", 2, qty=3)])
    assert ev.after == {"id": 2, "qty": 3, "total": UNCHANGED}
    with pytest.raises(TransientError):
        source.lacking([change("public.docs", 3, body="x")])
    reader.down = False
    assert source.lacking([change("public.docs", 4, body="x")]) == []


def test_a_table_whose_rows_a_policy_may_hide_from_the_reader_is_refused() -> None:
    reader, now = CatalogReader(), [0.0]
    reader.hidden = {"public.docs"}
    source = rows(reader, now)
    assert source.lacking([change("public.lines", 1, qty=2)]) != []
    with pytest.raises(
        ConfigError, match=r"role reader cannot read every row of public\.docs"
    ):
        source.lacking([change("public.docs", 2, body="x")])


def test_whole_images_ask_nothing_of_the_source_once_the_columns_are_known() -> None:
    reader, now = CatalogReader(), [0.0]
    source = rows(reader, now)
    plain = [change("public.docs", 1, body="x")]
    assert not source.whole(plain)  # its generated columns not read yet
    assert source.fill(plain) == {}
    assert reader.asked == [["public.docs"]]
    assert source.whole(plain)
    assert not source.whole([change("public.docs", 2, body=UNCHANGED)])
    source.lacking([change("public.lines", 3, qty=1, total=1)])
    assert source.whole([change("public.lines", 4, qty=1, total=1)])
    assert not source.whole([change("public.lines", 5, qty=1)])
    now[0] = GENERATED_TTL_S + 1
    assert not source.whole(plain)  # to be read again
