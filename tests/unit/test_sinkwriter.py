"""SinkWriter retries and abandonment, and a randomized replay of the loop.

The replay test feeds a random event history (creates, updates, updates with
an unchanged TOASTed column, deletes, tombstones) through the processor in
random batch cuts into memory sinks that fail now and then, and re-processes
batches as a crash before commit would; the sinks must end equal to the final
state of the history.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from test_processor import VIEW, event, make_processor, tombstone

from connectors.memory import MemorySink
from pipeline.decode import FakeMessage
from pipeline.errors import Stopped, TransientError
from pipeline.events import DocumentOp, Upsert, table_version
from pipeline.processor import ops_for_sink
from pipeline.sinkwriter import (
    Abandoned,
    Backoff,
    SinkWriter,
    kafka_outage,
    open_sinks,
    until_reachable,
)
from pipeline.types import PLACEHOLDER

pytestmark = pytest.mark.unit


def make_writer(
    sinks: dict[str, MemorySink],
    waits: list[float] | None = None,
    abandon: Any = lambda: False,
) -> SinkWriter:
    record = waits if waits is not None else []
    return SinkWriter(sinks, Backoff(1, 4), wait=record.append, should_abandon=abandon)


def ups(n: int, view: str = VIEW) -> list[DocumentOp]:
    return [Upsert(view, str(i), 10 + i, {"id": i}) for i in range(n)]


def test_sinkwriter_transient_failures_retried_until_success():
    sink = MemorySink("m", fail_prob=0.7, seed=3)
    waits: list[float] = []
    assert make_writer({"m": sink}, waits).write({"m": ups(5)}) == []
    assert len(waits) >= 1  # seed 3 fails at least once
    assert sorted(sink.documents(VIEW)) == [str(i) for i in range(5)]


def test_sinkwriter_store_down_then_up_retries_only_failed_sink():
    up, down = MemorySink("up"), MemorySink("down")
    down.down = True
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            down.down = False

    writer = SinkWriter(
        {"up": up, "down": down}, Backoff(1, 4), wait=wait, should_abandon=lambda: False
    )
    writer.write({"up": ups(3), "down": ups(3)})
    assert len(waits) == 3
    assert up.writes == 1
    assert sorted(down.documents(VIEW)) == ["0", "1", "2"]


def test_sinkwriter_partial_failure_retried_to_full_batch():
    sink = MemorySink("m", partial_fail_prob=0.5, seed=1)
    make_writer({"m": sink}).write({"m": ups(40)})
    assert len(sink.documents(VIEW)) == 40


def test_sinkwriter_should_abandon_true_raises_abandoned():
    sink = MemorySink("m")
    sink.down = True
    with pytest.raises(Abandoned):
        make_writer({"m": sink}, abandon=lambda: True).write({"m": ups(2)})
    assert sink.documents(VIEW) == {}


def test_sinkwriter_rejected_ids_returned_as_rejections():
    sink = MemorySink("m", reject_ids=["1"])
    rejections = make_writer({"m": sink}).write({"m": ups(3)})
    assert [(r.op.doc_id, r.sink) for r in rejections] == [("1", "m")]
    assert sorted(sink.documents(VIEW)) == ["0", "2"]


def test_sinkwriter_empty_op_lists_write_nothing():
    sink = MemorySink("m")
    assert make_writer({"m": sink}).write({"m": []}) == []
    assert sink.writes == 0


# -- randomized replay -------------------------------------------------------


def random_history(
    rng: random.Random, n: int
) -> tuple[list[FakeMessage], dict[str, tuple[int, Any]]]:
    """Random events over a few rows, and the final state per document id.

    The final state maps an id to ``(version, doc)``; ``doc`` is ``None`` for a
    deleted row. A TOASTed ``body`` arrives unchanged only for a row that
    exists (as PostgreSQL sends it only for an update).
    """
    msgs: list[FakeMessage] = []
    rows: dict[int, dict[str, Any]] = {}
    final: dict[str, tuple[int, Any]] = {}
    while len(msgs) < n:
        offset = len(msgs)
        ident = rng.randrange(6)
        roll = rng.random()
        if ident in rows and roll < 0.15:
            msgs.append(event(offset, "d", ident))
            del rows[ident]
            final[str(ident)] = (table_version(0, offset), None)
            if rng.random() < 0.7:
                msgs.append(tombstone(offset + 1, ident))
                # A tombstone deletes again, at its own offset.
                final[str(ident)] = (table_version(0, offset + 1), None)
            continue
        title = f"t{offset}"
        if ident in rows and roll < 0.6:
            row = {**rows[ident], "title": title}
            msgs.append(
                event(offset, "u", ident, {"title": title, "body": PLACEHOLDER})
            )
        else:
            row = {"id": ident, "title": title, "body": f"body-{offset}-" * 50}
            op = "u" if ident in rows else "c"
            msgs.append(event(offset, op, ident, {"title": title, "body": row["body"]}))
        rows[ident] = row
        final[str(ident)] = (table_version(0, offset), row)
    return msgs, final


@pytest.mark.parametrize("seed", range(25))
def test_sinkwriter_random_cuts_failures_and_replays_converge(seed):
    rng = random.Random(seed)
    msgs, want = random_history(rng, rng.randrange(50, 250))
    sinks = {
        "a": MemorySink("a", fail_prob=0.2, partial_fail_prob=0.2, seed=seed),
        "b": MemorySink("b", partial_fail_prob=0.3, seed=seed + 1000),
    }
    writer = make_writer(sinks)
    proc = make_processor()
    committed = 0
    while committed < len(msgs):
        cut = msgs[committed : committed + rng.randrange(1, 25)]
        batch = proc.process(cut)
        assert batch.dead == []
        rejections = writer.write({n: ops_for_sink(batch, [VIEW]) for n in sinks})
        assert rejections == []
        roll = rng.random()
        if roll < 0.2:
            continue  # crash before commit: the same records are read again
        if roll < 0.25:
            committed = rng.randrange(0, committed + 1)  # resume from older offsets
            continue
        committed += len(cut)
    assert want, "the history produced no document"
    for name, sink in sinks.items():
        got = {i: (s.version, s.doc) for (v, i), s in sink.data.items() if v == VIEW}
        assert got == want, name


def _compacted(msgs: list[FakeMessage]) -> list[FakeMessage]:
    """``msgs`` after log compaction: each key's last record only."""
    last = {m.msg_key: m for m in msgs}
    return [m for m in msgs if last[m.msg_key] is m]


@pytest.mark.parametrize("seed", range(25))
def test_sinkwriter_compacted_rest_of_history_after_partial_apply_converges(seed):
    """A worker applied part of the history, stopped, and resumes on what
    compaction left of the rest (a deleted key: its tombstone only)."""
    rng = random.Random(seed)
    msgs, want = random_history(rng, rng.randrange(50, 250))
    sink = MemorySink("m")
    proc = make_processor()
    cut = rng.randrange(1, len(msgs))
    for part in (msgs[:cut], _compacted(msgs[cut:])):
        batch = proc.process(part)
        rejected = make_writer({"m": sink}).write({"m": ops_for_sink(batch, [VIEW])})
        # Only an update whose TOASTed value compaction dropped is refused.
        assert all(isinstance(r.op, Upsert) and r.op.unchanged_fields for r in rejected)
    # Keys deleted after the cut: compaction left only their tombstone.
    # (Rows updated after the cut are left out: compaction may drop the value
    # of a TOASTed column that a later update carries as unchanged.)
    gone = {
        str(json.loads(m.msg_key or b"{}")["payload"]["id"])
        for m in _compacted(msgs[cut:])
        if m.msg_value is None
    }
    got = {i: (s.version, s.doc) for (v, i), s in sink.data.items() if v == VIEW}
    assert {i: got.get(i) for i in gone} == {i: want[i] for i in gone}


def test_sinkwriter_writes_the_sinks_of_a_batch_at_the_same_time():
    """Each store works on its bulk request while the others do: two sinks
    whose writes each wait for the other's to have started both finish."""
    together = threading.Barrier(2, timeout=10)
    first, second = MemorySink("first"), MemorySink("second")
    for sink in (first, second):
        original = sink.write

        def meet_then_write(ops, original=original):
            together.wait()  # BrokenBarrierError if the writes ran one by one
            return original(ops)

        sink.write = meet_then_write  # type: ignore[method-assign]
    writer = make_writer({"first": first, "second": second})
    assert writer.write({"first": ups(2), "second": ups(3)}) == []
    assert sorted(first.documents(VIEW)) == ["0", "1"]
    assert sorted(second.documents(VIEW)) == ["0", "1", "2"]


def test_sinkwriter_stop_during_the_writes_keeps_a_batch_every_sink_acknowledged():
    """A stop that arrives while the stores write: every sink acknowledged,
    so the batch stands (its caller commits it, then leaves)."""
    first, second = MemorySink("first"), MemorySink("second")
    stop = {"now": False}
    original = first.write

    def write_then_stop(ops):
        result = original(ops)
        stop["now"] = True  # SIGTERM arrives while the stores write
        return result

    first.write = write_then_stop  # type: ignore[method-assign]
    writer = make_writer(
        {"first": first, "second": second}, abandon=lambda: stop["now"]
    )
    assert writer.write({"first": ups(2), "second": ups(2)}) == []
    assert (first.writes, second.writes) == (1, 1)


def test_sinkwriter_stop_while_a_store_is_down_abandons_and_spares_the_other():
    """One store down, a stop asked: the batch is given up after the store
    that answered wrote it once; the down one is not retried."""
    up, down = MemorySink("up"), MemorySink("down")
    down.down = True
    writer = make_writer({"up": up, "down": down}, abandon=lambda: True)
    with pytest.raises(Abandoned):
        writer.write({"up": ups(2), "down": ups(2)})
    assert up.writes == 1
    assert down.documents(VIEW) == {}


def test_sinkwriter_a_sink_error_is_raised_once_the_other_writes_ended():
    broken, fine = MemorySink("broken"), MemorySink("fine")
    fine_done = threading.Event()
    original = fine.write

    def slow_fine(ops):
        time.sleep(0.05)
        result = original(ops)
        fine_done.set()
        return result

    def fail(_ops):
        raise RuntimeError("bug in the sink")

    broken.write = fail  # type: ignore[method-assign]
    fine.write = slow_fine  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="bug in the sink"):
        make_writer({"broken": broken, "fine": fine}).write(
            {"broken": ups(1), "fine": ups(1)}
        )
    assert fine_done.is_set()


class _DownAtOpen(MemorySink):
    """A store that is not reachable for its first ``failures`` opens."""

    def __init__(self, failures: int) -> None:
        super().__init__("slow")
        self.failures = failures
        self.opens = 0

    def open(self) -> None:
        self.opens += 1
        if self.opens <= self.failures:
            raise TransientError("connection refused")


def test_open_sinks_waits_for_a_store_down_at_the_start():
    down = _DownAtOpen(failures=3)
    up = _DownAtOpen(failures=0)
    open_sinks({"a": up, "b": down}, Backoff(1, 2), stopping=lambda: False)
    assert (up.opens, down.opens) == (1, 4)


def test_until_reachable_gives_way_to_a_stop_with_stopped():
    down = _DownAtOpen(failures=10**6)
    asked: list[int] = []

    def stopping() -> bool:
        return bool(asked)

    def work() -> None:
        if down.opens == 1:
            asked.append(15)  # the signal arrives during the second attempt
        down.open()

    with pytest.raises(Stopped, match="opening slow"):
        until_reachable(work, "opening slow", Backoff(1, 2), stopping)
    assert down.opens == 2


def test_until_reachable_waits_out_a_broker_restart_but_not_a_refusal():
    answers = [
        KafkaException(KafkaError(KafkaError.NOT_COORDINATOR)),
        KafkaException(KafkaError(KafkaError._UNKNOWN_PARTITION)),
        "ok",
    ]

    def work() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert until_reachable(work, "reading", Backoff(1, 2), lambda: False) == "ok"

    def refused() -> None:
        raise KafkaException(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED))

    with pytest.raises(KafkaException):
        until_reachable(refused, "reading", Backoff(1, 2), lambda: False)
    assert not kafka_outage(KafkaException(KafkaError(KafkaError._SSL)))
