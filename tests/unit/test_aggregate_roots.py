"""The roots of a batch handed out in chunks; key texts read back by SQL."""

from __future__ import annotations

import pytest
from psycopg import sql

from pipeline.aggregate.catalog import Column
from pipeline.aggregate.plan import from_text
from pipeline.aggregate.roots import Blamed, RootKeys
from pipeline.aggregate.view import Pending
from pipeline.events import Position

pytestmark = pytest.mark.unit


def pos(offset: int) -> Position:
    return Position("t", 0, offset)


class FakeCursor:
    """Resolved roots in server order; records what was asked."""

    def __init__(self, rows: list[Blamed]) -> None:
        self.rows = rows
        self.asked: list[int] = []

    def fetch(self, size: int) -> list[Blamed]:
        self.asked.append(size)
        out, self.rows = self.rows[:size], self.rows[size:]
        return out


def drain(roots: RootKeys) -> list[dict[tuple[str, ...], Position | None]]:
    chunks = []
    while not roots.done:
        chunks.append(roots.next_chunk())
    return chunks


def test_root_keys_direct_only_split_in_key_order_with_positions() -> None:
    direct = {(str(i),): pos(i) for i in range(7)}
    chunks = drain(RootKeys(direct, 3))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert [k for c in chunks for k in c] == sorted(direct)
    assert all(c[k] == direct[k] for c in chunks for k in c)


def test_root_keys_resolved_fill_chunks_after_direct_each_root_once() -> None:
    direct = {("a",): pos(1), ("b",): pos(2)}
    resolved = [((k,), pos(10 + i)) for i, k in enumerate("abcdefgh")]
    cursor = FakeCursor(resolved)
    chunks = drain(RootKeys(direct, 3, cursor.fetch))
    keys = [k for c in chunks for k in c]
    assert sorted(keys) == [(k,) for k in "abcdefgh"]
    assert len(keys) == len(set(keys))  # a and b read once, with the direct ones
    assert all(len(c) <= 3 for c in chunks)
    assert chunks[0] == {("a",): pos(1), ("b",): pos(2), ("c",): pos(12)}
    # The cursor is asked only for what a chunk still lacks.
    assert cursor.asked[0] == 1


def test_root_keys_fanout_of_100_in_chunks_of_7_gives_15_chunks() -> None:
    cursor = FakeCursor([((f"{i:03d}",), pos(0)) for i in range(100)])
    chunks = drain(RootKeys({}, 7, cursor.fetch))
    assert [len(c) for c in chunks] == [7] * 14 + [2]


def test_root_keys_cursor_ends_on_chunk_boundary_last_chunk_empty() -> None:
    cursor = FakeCursor([((str(i),), None) for i in range(6)])
    chunks = drain(RootKeys({}, 3, cursor.fetch))
    assert [len(c) for c in chunks] == [3, 3, 0]


def test_root_keys_size_below_one_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        RootKeys({}, 0)


@pytest.mark.parametrize(
    ("oid", "sql_type", "expected"),
    [
        (17, "bytea", "decode(x, 'base64')"),
        (2950, "uuid", "x::uuid"),
        (1700, "numeric(12,3)", "x::numeric(12,3)"),
        (1184, "timestamp with time zone", "x::timestamp with time zone"),
    ],
)
def test_from_text_key_types_read_their_json_form(
    oid: int, sql_type: str, expected: str
) -> None:
    column = Column("k", oid, sql_type, sql_type)
    assert from_text(sql.SQL("x"), column).as_string(None) == expected


def test_pending_blamed_named_change_else_batch_last() -> None:
    pending = Pending()
    pending.name(("1",), pos(4))
    pending.position = pos(5)
    pending.refused_by["1"] = pos(4)
    assert pending.blamed("1") == pos(4)
    assert pending.blamed("2") == pos(5)
    assert pending.named_by == {("1",): pos(4)}
    assert pending
    assert not Pending()
    assert Pending(every_root=pos(1))
