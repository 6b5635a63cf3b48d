"""How a table view's replay deals its partitions out to processes, and
what of a process's error reaches its parent."""

from __future__ import annotations

import pickle

import pytest

from pipeline.errors import ReadsideError, TransientError
from pipeline.snapshot.replay import Span, _portable, split


def _sizes(shares: list[list[Span]]) -> list[int]:
    return [sum(s.size for s in share) for share in shares]


def _offsets(spans: list[Span]) -> list[tuple[int, int]]:
    return sorted((s.partition, o) for s in spans for o in range(s.start, s.end))


SPANS = [Span(p, 10 * p, 10 * p + size) for p, size in enumerate([5, 9, 1, 7, 3])]


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 25, 100])
def test_every_offset_goes_to_exactly_one_share(n):
    shares = split(SPANS, n)
    assert _offsets([s for share in shares for s in share]) == _offsets(SPANS)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 25])
def test_shares_are_equal_in_offsets_within_one(n):
    sizes = _sizes(split(SPANS, n))
    assert len(sizes) == n
    assert max(sizes) - min(sizes) <= 1
    assert sum(sizes) == 25


def test_three_equal_partitions_in_two_shares_cut_the_middle_one():
    spans = [Span(p, 0, 100) for p in range(3)]
    assert split(spans, 2) == [
        [Span(0, 0, 100), Span(1, 0, 50)],
        [Span(1, 50, 100), Span(2, 0, 100)],
    ]


def test_never_more_shares_than_offsets_and_none_empty():
    shares = split([Span(0, 0, 2), Span(2, 5, 6)], 8)
    assert len(shares) == 3
    assert all(shares)
    assert split([Span(0, 0, 4)], 1) == [[Span(0, 0, 4)]]
    assert split([], 3) == []


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_a_share_holds_one_piece_per_partition_in_order(n):
    for share in split(SPANS, n):
        parts = [s.partition for s in share]
        assert parts == sorted(set(parts))
        assert all(s.size > 0 for s in share)


class _Unpicklable(TransientError):
    def __init__(self, message: str, extra: object) -> None:
        super().__init__(message)
        self.extra = extra

    def __reduce__(self):  # type: ignore[no-untyped-def]
        raise TypeError("no")


def test_an_error_that_cannot_travel_keeps_its_kind_and_message():
    assert isinstance(_portable(TransientError("redis down")), TransientError)
    sent = _portable(_Unpicklable("store gone", lambda: None))
    assert type(sent) is TransientError  # the parent still waits it out
    assert "_Unpicklable: store gone" in str(sent)
    assert pickle.loads(pickle.dumps(sent)).args == sent.args

    class Local(Exception):
        def __reduce__(self):  # type: ignore[no-untyped-def]
            raise TypeError("no")

    other = _portable(Local("x"))
    assert type(other) is ReadsideError
