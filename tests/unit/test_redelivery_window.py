"""Debezium's redeliveries recognised per partition (pipeline.redelivery)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.events import ChangeEvent, Op, Position
from pipeline.redelivery import Redeliveries

pytestmark = pytest.mark.unit

TOPIC = "app.public.items"


def change(
    offset: int,
    op: Op,
    key: int,
    lsn: int | None = None,
    txid: int | None = 7,
    part: int = 0,
    snapshot: bool = False,
) -> tuple[bytes, ChangeEvent]:
    raw = f'{{"id":{key}}}'.encode()
    ev = ChangeEvent(
        table="public.items",
        op=op,
        key={"id": key},
        before=None,
        after=None if op in (Op.DELETE, Op.TOMBSTONE) else {"id": key},
        lsn=None if op is Op.TOMBSTONE else (lsn if lsn is not None else 1000 + offset),
        commit_ts_ms=None,
        txid=None if op is Op.TOMBSTONE else txid,
        position=Position(TOPIC, part, offset),
        snapshot=snapshot,
    )
    return raw, ev


def copies(r: Redeliveries, records: list[tuple[bytes, ChangeEvent]]) -> list[int]:
    """The offsets of the records recognised as copies."""
    return [ev.position.offset for key, ev in records if r.is_copy(key, ev)]


def test_a_copy_at_a_higher_offset_is_recognised_the_original_read_again_is_not():
    r = Redeliveries(100)
    first = [change(0, Op.UPDATE, 1, lsn=500), change(1, Op.UPDATE, 1, lsn=600)]
    again = [change(2, Op.UPDATE, 1, lsn=500), change(3, Op.UPDATE, 1, lsn=600)]
    assert copies(r, first) == []
    assert copies(r, again) == [2, 3]
    # a batch given up and read again: the originals apply again
    assert copies(r, first) == []
    assert copies(r, again) == [2, 3]


def test_another_change_of_the_same_row_is_never_a_copy():
    r = Redeliveries(100)
    assert copies(r, [change(0, Op.UPDATE, 1, lsn=500)]) == []
    # same LSN, another row / another transaction / another operation
    assert copies(r, [change(1, Op.UPDATE, 2, lsn=500)]) == []
    assert copies(r, [change(2, Op.UPDATE, 1, lsn=500, txid=8)]) == []
    assert copies(r, [change(3, Op.DELETE, 1, lsn=500)]) == []
    # another partition has its own window
    assert copies(r, [change(4, Op.UPDATE, 1, lsn=500, part=1)]) == []


def test_snapshot_rows_are_not_screened():
    r = Redeliveries(100)
    rows = [change(0, Op.READ, 1, lsn=500), change(1, Op.READ, 1, lsn=500)]
    assert copies(r, rows) == []
    snap = [change(2, Op.UPDATE, 2, lsn=9, snapshot=True)] * 2
    assert copies(r, snap) == []


def test_the_tombstone_after_a_copied_delete_is_skipped_even_when_read_again():
    r = Redeliveries(100)
    original = [change(0, Op.DELETE, 1, lsn=500), change(1, Op.TOMBSTONE, 1)]
    again = [
        change(2, Op.CREATE, 1, lsn=700),  # the row comes back
        change(3, Op.DELETE, 1, lsn=500),  # the copies of its delete
        change(4, Op.TOMBSTONE, 1),
    ]
    assert copies(r, original) == []  # the original tombstone deletes
    assert copies(r, again) == [3, 4]
    assert copies(r, [change(4, Op.TOMBSTONE, 1)]) == [4]  # the batch read again
    # a later delete of the row is applied, and so is its tombstone
    later = [change(5, Op.DELETE, 1, lsn=900), change(6, Op.TOMBSTONE, 1)]
    assert copies(r, later) == []


def test_the_window_keeps_the_last_changes_and_forget_drops_a_partition():
    r = Redeliveries(2)
    assert copies(r, [change(o, Op.UPDATE, o, lsn=o) for o in range(3)]) == []
    # the oldest identity left the window: its copy is not recognised
    assert copies(r, [change(10, Op.UPDATE, 0, lsn=0)]) == []
    assert copies(r, [change(11, Op.UPDATE, 2, lsn=2)]) == [11]
    r.forget([(TOPIC, 0)])
    assert copies(r, [change(12, Op.UPDATE, 2, lsn=2)]) == []


def test_a_window_of_zero_turns_it_off():
    r = Redeliveries(0)
    records = [change(0, Op.UPDATE, 1, lsn=5), change(1, Op.UPDATE, 1, lsn=5)]
    assert copies(r, records) == []


class FakeLog:
    """A partition's committed mark and its records before the worker began."""

    def __init__(self, mark: str | None, older: list[tuple[bytes, ChangeEvent]]):
        self._mark = mark
        self.older = older
        self.reads: list[tuple[int, int]] = []

    def mark(self, part: tuple[str, int]) -> str | None:
        return self._mark

    def records(self, part: tuple[str, int], start: int, end: int):  # type: ignore[no-untyped-def]
        self.reads.append((start, end))
        return iter(
            [(k, ev) for k, ev in self.older if start <= ev.position.offset < end]
        )


def streamed(offset: int, key: int, lsn: int, commit: int) -> tuple[bytes, ChangeEvent]:
    raw, ev = change(offset, Op.UPDATE, key, lsn=lsn)
    return raw, replace(ev, stream_pos=(commit, lsn))


def test_a_new_worker_looks_back_for_the_originals_when_the_mark_says_so():
    # Offsets 0-3 were applied by another worker, which committed 4 with the
    # mark (300, 301); this worker starts at 4, where the copies begin.
    older = [streamed(o, o, lsn=100 * o + 1, commit=100 * o) for o in range(4)]
    log = FakeLog("300/301", older)
    r = Redeliveries(100, log)
    again = [streamed(2 + o, o, lsn=100 * o + 1, commit=100 * o) for o in range(2, 4)]
    assert copies(r, again) == [4, 5]
    assert log.reads == [(0, 4)]  # read back once, up to where it began
    # past the mark: new changes, applied; no more reading back
    new = [streamed(6, 9, lsn=501, commit=500)]
    assert copies(r, new) == []
    assert log.reads == [(0, 4)]
    assert r.metadata((TOPIC, 0)) == "500/501"


def test_no_mark_or_a_position_above_it_reads_nothing_back():
    older = [streamed(0, 1, lsn=101, commit=100)]
    for mark in (None, "50/51", "not a mark"):
        log = FakeLog(mark, older)
        r = Redeliveries(100, log)
        # a copy that the worker cannot know of without a mark is applied
        assert copies(r, [streamed(1, 1, lsn=101, commit=100)]) == []
        assert log.reads == []


def test_a_restored_source_is_applied_though_its_positions_are_below_the_mark():
    # The source came back from a backup: its LSNs start lower again. Every
    # change is suspect, none is found before: all are applied.
    older = [streamed(o, o, lsn=9000 + o, commit=9000) for o in range(5)]
    log = FakeLog("9000/9004", older)
    r = Redeliveries(100, log)
    restored = [streamed(5 + o, o, lsn=200 + o, commit=200) for o in range(5)]
    assert copies(r, restored) == []
    assert len(log.reads) == 1
