"""ReadAhead: a snapshot load's chunks read in a thread, in order, one ahead."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline.errors import TransientError
from pipeline.snapshot.prefetch import InOrder, ReadAhead

pytestmark = pytest.mark.unit


def numbers(last: int, size: int = 3):
    """Chunks of ``size`` numbers after a key, up to ``last``; reads noted."""
    reads: list[int | None] = []

    def read(after: int | None) -> list[int] | None:
        reads.append(after)
        start = 0 if after is None else after
        chunk = list(range(start + 1, min(start + size, last) + 1))
        return chunk or None

    def next_key(chunk: list[int]) -> int | None:
        return chunk[-1] if len(chunk) == size else None

    return read, next_key, reads


def test_read_ahead_chunks_in_order_until_short_chunk():
    read, next_key, reads = numbers(8)
    with ReadAhead(read, next_key, None) as chunks:
        got = list(chunks)
    assert got == [[1, 2, 3], [4, 5, 6], [7, 8]]
    assert reads == [None, 3, 6]


def test_read_ahead_starts_after_key_and_ends_on_none():
    read, next_key, reads = numbers(6)
    with ReadAhead(read, next_key, 3) as chunks:
        assert list(chunks) == [[4, 5, 6]]
    assert reads == [3, 6]


def test_read_ahead_reads_at_most_depth_chunks_ahead():
    read, next_key, reads = numbers(100)
    with ReadAhead(read, next_key, None, depth=1) as chunks:
        first = next(iter(chunks))
        time.sleep(0.3)  # the thread fills the queue, then waits
        assert first == [1, 2, 3]
        # the chunk queued and the one waiting to be queued
        assert len(reads) == 3


def test_read_ahead_error_comes_after_the_chunks_before_it():
    read, next_key, _ = numbers(100)

    def failing(after: int | None) -> list[int] | None:
        if after == 6:
            raise TransientError("source gone")
        return read(after)

    with ReadAhead(failing, next_key, None) as chunks:
        it = iter(chunks)
        assert next(it) == [1, 2, 3]
        assert next(it) == [4, 5, 6]
        with pytest.raises(TransientError, match="source gone"):
            next(it)


def test_read_ahead_close_while_reading_ahead_ends_the_thread():
    read, next_key, _ = numbers(10**6)
    before = set(threading.enumerate())
    chunks = ReadAhead(read, next_key, None)
    # its own thread (other tests of the session may start or end threads)
    ahead = [t for t in threading.enumerate() if t not in before]
    assert [t.name for t in ahead] == ["snapshot-read-ahead"]
    assert next(iter(chunks)) == [1, 2, 3]
    time.sleep(0.2)
    started = time.monotonic()
    chunks.close()
    assert time.monotonic() - started < 2
    assert not ahead[0].is_alive()


def test_in_order_done_in_submission_order_each_slot_alone():
    busy: set[str] = set()
    lock = threading.Lock()
    finished: list[int] = []

    def work(n: int, slot: str) -> int:
        with lock:
            assert slot not in busy  # no two items on one slot at once
            busy.add(slot)
        time.sleep(0.05 if n % 2 == 0 else 0.01)  # the even ones end last
        with lock:
            busy.discard(slot)
        return n

    with InOrder(["a", "b"]) as writes:
        for n in range(6):
            writes.submit(lambda slot, n=n: work(n, slot), finished.append)
        writes.drain()
    assert finished == list(range(6))


def test_in_order_error_raised_and_later_items_not_done():
    finished: list[int] = []

    def work(n: int, _slot: str) -> int:
        if n == 1:
            raise TransientError("store down")
        return n

    with InOrder(["a", "b"]) as writes:
        writes.submit(lambda slot: work(0, slot), finished.append)
        writes.submit(lambda slot: work(1, slot), finished.append)
        # the slots are taken: the oldest unfinished item (1) ends here
        with pytest.raises(TransientError, match="store down"):
            writes.submit(lambda slot: work(2, slot), finished.append)
    assert finished == [0]


def test_in_order_one_slot_runs_in_callers_thread():
    threads: list[str] = []
    finished: list[int] = []
    with InOrder(["only"]) as writes:
        writes.submit(
            lambda _slot: threads.append(threading.current_thread().name) or 7,
            finished.append,
        )
        assert finished == [7]  # done at once
    assert threads == [threading.current_thread().name]
