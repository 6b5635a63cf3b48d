"""Reads by id joined while one is on the wire (:mod:`query.joined`): the
first goes at once, the ones that arrive while it is out go together next,
each caller gets its own ids' answer from a read that started after it
asked, and an error or a cancelled caller loses nobody else's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from connectors.base import Stored
from pipeline.errors import TransientError
from query import joined
from query.joined import JoinedReads

pytestmark = pytest.mark.unit


class GatedStore:
    """An async store whose reads finish when the test opens their gate."""

    def __init__(self, docs: dict[str, int]) -> None:
        self.docs = docs
        self.reads: list[list[str]] = []  # ids of each read, as sent
        self.gates: list[asyncio.Event] = []
        self.fail: Exception | None = None

    async def afetch(self, view: str, ids: Sequence[str]) -> dict[str, Stored]:
        self.reads.append(list(ids))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.fail is not None:
            raise self.fail
        return {i: Stored(self.docs[i], {"id": i}) for i in ids if i in self.docs}

    async def aclose(self) -> None:
        pass

    async def sent(self, count: int) -> None:
        """Until ``count`` reads were sent."""
        for _ in range(1000):
            if len(self.reads) >= count:
                return
            await asyncio.sleep(0)
        raise AssertionError(f"{count} reads expected, {len(self.reads)} sent")


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run a scenario on a loop of its own; a read that never comes back
    fails it (in 10 s) rather than hanging the suite."""
    asyncio.run(asyncio.wait_for(scenario(), 10))


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_reads_arriving_while_one_is_out_go_together_next():
    async def scenario() -> None:
        store = GatedStore({"1": 1, "2": 2, "3": 3, "4": 4})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        later = [
            asyncio.create_task(reads.fetch(store, "v", ids))
            for ids in (["2"], ["3", "9"], ["2"])
        ]
        await settle()
        assert store.reads == [["1"]]  # held while the first is out
        store.gates[0].set()
        assert (await first) == {"1": Stored(1, {"id": "1"})}
        await store.sent(2)
        assert store.reads[1] == ["2", "3", "9"]  # one read, each id once
        store.gates[1].set()
        got = await asyncio.gather(*later)
        assert got == [
            {"2": Stored(2, {"id": "2"})},
            {"3": Stored(3, {"id": "3"})},  # 9 is missing: absent
            {"2": Stored(2, {"id": "2"})},
        ]
        await settle()
        assert len(store.reads) == 2  # nothing left held: the line is idle
        again = asyncio.create_task(reads.fetch(store, "v", ["4"]))
        await store.sent(3)  # an idle line sends at once
        store.gates[2].set()
        assert (await again) == {"4": Stored(4, {"id": "4"})}

    run(scenario)


def test_a_held_read_never_joins_one_sent_before_it():
    """A read that arrives while one is out waits for the next read even for
    an id the one out asks for: that read started before the caller asked,
    so it may predate what the caller waited for (min_lsn)."""

    async def scenario() -> None:
        store = GatedStore({"1": 1})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        store.docs["1"] = 2  # a newer version lands after the first read left
        second = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await settle()
        store.gates[0].set()
        await first
        await store.sent(2)
        store.gates[1].set()
        assert (await second) == {"1": Stored(2, {"id": "1"})}
        assert store.reads == [["1"], ["1"]]

    run(scenario)


def test_views_and_stores_are_joined_apart():
    async def scenario() -> None:
        a, b = GatedStore({"1": 1}), GatedStore({"1": 1})
        reads = JoinedReads()
        tasks = [
            asyncio.create_task(reads.fetch(a, "v", ["1"])),
            asyncio.create_task(reads.fetch(a, "w", ["1"])),
            asyncio.create_task(reads.fetch(b, "v", ["1"])),
        ]
        await settle()
        assert (a.reads, b.reads) == ([["1"], ["1"]], [["1"]])  # all at once
        for gate in [*a.gates, *b.gates]:
            gate.set()
        assert all(
            r == {"1": Stored(1, {"id": "1"})} for r in await asyncio.gather(*tasks)
        )

    run(scenario)


def test_an_error_reaches_every_caller_of_its_read_and_the_line_goes_on():
    async def scenario() -> None:
        store = GatedStore({"1": 1, "2": 2, "3": 3})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        held = asyncio.create_task(reads.fetch(store, "v", ["2"]))
        await settle()
        store.gates[0].set()
        await first
        await store.sent(2)  # the held read is out: these wait for the next
        waiting = [asyncio.create_task(reads.fetch(store, "v", [i])) for i in "13"]
        await settle()
        store.fail = TransientError("redis: down")
        store.gates[1].set()
        with pytest.raises(TransientError, match="down"):
            await held
        for task in waiting:  # the error of the read out, with no read of their own
            with pytest.raises(TransientError, match="down"):
                await task
        assert len(store.reads) == 2
        store.fail = None  # back: the next read is sent and answered
        after = asyncio.create_task(reads.fetch(store, "v", ["2"]))
        await store.sent(3)
        store.gates[2].set()
        assert (await after) == {"2": Stored(2, {"id": "2"})}

    run(scenario)


def test_the_reads_held_while_the_first_fails_fail_with_it():
    """A store that does not answer is not asked again by each caller in
    turn: a hung Redis would hold every caller for one timeout more."""

    async def scenario() -> None:
        store = GatedStore({"1": 1, "2": 2})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        held = [asyncio.create_task(reads.fetch(store, "v", [i])) for i in "12"]
        await settle()
        store.fail = TransientError("redis: Timeout reading from socket")
        store.gates[0].set()
        for task in [first, *held]:
            with pytest.raises(TransientError, match="Timeout"):
                await task
        assert store.reads == [["1"]]

    run(scenario)


def test_a_cancelled_caller_is_left_out_and_the_others_answered():
    async def scenario() -> None:
        store = GatedStore({"1": 1, "2": 2, "3": 3})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        gone = asyncio.create_task(reads.fetch(store, "v", ["2"]))
        kept = asyncio.create_task(reads.fetch(store, "v", ["3"]))
        await settle()
        gone.cancel()  # its request timed out
        await settle()
        store.gates[0].set()
        await first
        await store.sent(2)
        assert store.reads[1] == ["3"]
        store.gates[1].set()
        assert (await kept) == {"3": Stored(3, {"id": "3"})}
        assert gone.cancelled()

    run(scenario)


def test_a_cancelled_first_read_hands_the_line_to_the_held_ones():
    async def scenario() -> None:
        store = GatedStore({"1": 1, "2": 2})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["1"]))
        await store.sent(1)
        held = asyncio.create_task(reads.fetch(store, "v", ["2"]))
        await settle()
        first.cancel()
        await store.sent(2)
        store.gates[1].set()
        assert (await held) == {"2": Stored(2, {"id": "2"})}

    run(scenario)


def test_held_reads_beyond_the_id_limit_wait_for_the_read_after(monkeypatch):
    monkeypatch.setattr(joined, "MAX_JOINED_IDS", 3)

    async def scenario() -> None:
        store = GatedStore({str(i): i for i in range(10)})
        reads = JoinedReads()
        first = asyncio.create_task(reads.fetch(store, "v", ["0"]))
        await store.sent(1)
        held = [
            asyncio.create_task(reads.fetch(store, "v", ids))
            for ids in (["1", "2"], ["3"], ["4"], ["5", "6", "7", "8"])
        ]
        await settle()
        store.gates[0].set()
        await first
        for count, ids in ((2, ["1", "2", "3"]), (3, ["4"]), (4, ["5", "6", "7", "8"])):
            await store.sent(count)
            assert store.reads[count - 1] == ids
            store.gates[count - 1].set()
        got = await asyncio.gather(*held)
        assert [sorted(g) for g in got] == [
            ["1", "2"],
            ["3"],
            ["4"],
            ["5", "6", "7", "8"],
        ]
        await reads.aclose()

    run(scenario)
