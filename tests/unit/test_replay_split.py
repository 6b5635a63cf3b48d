"""How a table view's replay deals its partitions out to processes, and
what of a process's error reaches its parent."""

from __future__ import annotations

import pickle

import pytest

from pipeline.errors import ReadsideError, TransientError
from pipeline.snapshot.replay import Span, _portable, split


def _sizes(shares: list[list[Span]]) -> list[int]:
    return [sum(s.size for s in share) for share in shares]


def test_every_span_goes_to_exactly_one_share():
    spans = [Span(p, 10 * p, 10 * p + size) for p, size in enumerate([5, 9, 1, 7, 3])]
    shares = split(spans, 2)
    dealt = sorted((s for share in shares for s in share), key=lambda s: s.partition)
    assert dealt == spans
    assert len(shares) == 2


def test_shares_are_about_equal_in_records():
    spans = [Span(p, 0, size) for p, size in enumerate([100, 60, 50, 40, 30, 20])]
    assert sorted(_sizes(split(spans, 2))) == [140, 160]
    assert sorted(_sizes(split(spans, 3))) == [90, 100, 110]
    # a big partition alone, the small ones together
    spans = [Span(p, 0, size) for p, size in enumerate([90, 10, 10, 10])]
    assert sorted(_sizes(split(spans, 2))) == [30, 90]


def test_never_more_shares_than_partitions_and_none_empty():
    spans = [Span(0, 0, 4), Span(2, 0, 1)]
    shares = split(spans, 8)
    assert len(shares) == 2
    assert all(shares)
    assert split([Span(0, 0, 4)], 3) == [[Span(0, 0, 4)]]
    assert split([], 3) == []


def test_a_share_lists_its_partitions_in_order():
    spans = [Span(p, 0, size) for p, size in enumerate([1, 9, 1, 1, 9])]
    for share in split(spans, 2):
        assert [s.partition for s in share] == sorted(s.partition for s in share)


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


@pytest.mark.parametrize("n", [1, 2, 3])
def test_one_share_holds_everything_when_asked_for_one(n):
    spans = [Span(p, 0, 3) for p in range(n)]
    assert len(split(spans, 1)) == 1
