"""readside_time_lag_ms worked out when read, and the heartbeats that move
it on once the worker caught up (pipeline.timelag)."""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec  # type: ignore[attr-defined]
from prometheus_client import CollectorRegistry, generate_latest
from test_worker_gaps import _worker  # a worker of the repo's config

from pipeline.errors import TransientError
from pipeline.events import ChangeEvent, Op, Position
from pipeline.source.records import FakeMessage
from pipeline.timelag import REGISTRY_PAUSE_S, Heartbeats, Newest

HB = "rs.public.readside_heartbeat"
NOTES = "rs.public.notes"
TAGS = "rs.public.tags"


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def served(newest: Newest) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(newest)
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("readside_time_lag_ms{"):
            labels, value = line.rsplit(" ", 1)
            sink = labels.split('sink="')[1].split('"')[0]
            view = labels.split('view="')[1].split('"')[0]
            out[(view, sink)] = float(value)
    return out


def test_the_lag_grows_with_the_clock_until_something_newer_is_seen() -> None:
    clock = Clock(1000.0)
    newest = Newest(clock)
    assert served(newest) == {}  # nothing known: no figure, not a zero
    newest.seen("notes", "redis", 999_800)
    assert served(newest) == {("notes", "redis"): 200.0}
    clock.t = 1030.0  # nothing applied for 30 s: the figure says so
    assert served(newest) == {("notes", "redis"): 30_200.0}
    newest.seen("notes", "redis", 900_000)  # older than known: kept
    assert served(newest) == {("notes", "redis"): 30_200.0}
    newest.seen("notes", "redis", 1_029_900)
    assert served(newest) == {("notes", "redis"): 100.0}


class Converter:
    """Decodes FakeMessages whose value is a commit time; ``down`` stands
    for a registry that does not answer a record whose schema it lacks."""

    def __init__(self) -> None:
        self.known = True
        self.down = False
        self.asked = 0

    def fetches(self, msg: Any) -> bool:
        return not self.known

    def decode(self, msg: Any) -> ChangeEvent:
        if not self.known:
            self.asked += 1
            if self.down:
                raise TransientError("schema registry did not answer")
            self.known = True
        return ChangeEvent(
            "public.readside_heartbeat",
            Op.UPDATE,
            {"id": 1},
            None,
            {"id": 1},
            100,
            int(msg.value()),
            1,
            Position(msg.topic(), msg.partition(), msg.offset()),
        )


class Reader:
    def __init__(self) -> None:
        self.queued: list[FakeMessage] = []
        self.assigned: list[TopicPartition] = []

    def heartbeat(self, ts_ms: int) -> None:
        self.queued.append(FakeMessage(HB, str(ts_ms).encode()))

    def consume(self, n: int, timeout: float) -> list[FakeMessage]:
        out, self.queued = self.queued[:n], self.queued[n:]
        return out

    def assign(self, parts: list[TopicPartition]) -> None:
        self.assigned = parts


class Consumer:
    """Positions and committed offsets by partition."""

    def __init__(self) -> None:
        self.position_of: dict[tuple[str, int], int] = {}
        self.committed_of: dict[tuple[str, int], int] = {}
        self.committed_asked = 0

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(tp.topic, tp.partition, self.position_of.get(key, -1001))
            for tp in tps
            for key in [(tp.topic, tp.partition)]
        ]

    def committed(
        self, tps: list[TopicPartition], timeout: float
    ) -> list[TopicPartition]:
        self.committed_asked += 1
        return [
            TopicPartition(tp.topic, tp.partition, self.committed_of.get(key, -1001))
            for tp in tps
            for key in [(tp.topic, tp.partition)]
        ]


class Admin:
    """The broker's watermarks by partition, answered when ``answer`` is
    called (the loop never waits for them)."""

    def __init__(self) -> None:
        self.low: dict[tuple[str, int], int] = {}
        self.high: dict[tuple[str, int], int] = {}
        self.asks: list[set[tuple[str, int]]] = []
        self._open: list[tuple[Future[Any], int]] = []

    def list_offsets(
        self, specs: dict[TopicPartition, Any], request_timeout: float
    ) -> dict[TopicPartition, Future[Any]]:
        earliest = {repr(s) for s in specs.values()} == {repr(OffsetSpec.earliest())}
        self.asks.append({(tp.topic, tp.partition) for tp in specs})
        out = {}
        for tp in specs:
            key = (tp.topic, tp.partition)
            fut: Future[Any] = Future()
            value = (self.low if earliest else self.high).get(key, 0)
            self._open.append((fut, value))
            out[tp] = fut
        return out

    def answer(self) -> None:
        for fut, value in self._open:
            fut.set_result(SimpleNamespace(offset=value))
        self._open = []


def heartbeats(
    held: set[tuple[str, int]],
) -> tuple[Heartbeats, Consumer, Admin, Reader, Converter, Newest, Clock]:
    consumer, admin, reader = Consumer(), Admin(), Reader()
    converter, clock = Converter(), Clock()
    newest = Newest(Clock(2000.0))
    hb = Heartbeats(
        consumer,
        reader,
        admin,
        HB,
        {
            "notes": ([NOTES], ["redis", "elasticsearch"]),
            "tags": ([TAGS], ["redis"]),
        },
        converter,
        lambda: held,
        newest,
        clock,
    )
    return hb, consumer, admin, reader, converter, newest, clock


def turns(hb: Heartbeats, admin: Admin, in_hand: set[tuple[str, int]]) -> None:
    """A turn that asks the watermarks, the broker's answer, a turn that
    reads it."""
    hb.turn(in_hand)
    admin.answer()
    hb.turn(in_hand)


def test_a_heartbeat_moves_on_the_views_whose_partitions_are_applied() -> None:
    held = {(NOTES, 0), (NOTES, 1), (TAGS, 0)}
    hb, consumer, admin, reader, _conv, newest, _clock = heartbeats(held)
    consumer.position_of = {(NOTES, 0): 7, (NOTES, 1): 3, (TAGS, 0): 5}
    admin.high = {(NOTES, 0): 7, (NOTES, 1): 3, (TAGS, 0): 9}  # tags behind
    reader.heartbeat(1_999_000)
    hb.turn(set())
    assert newest.get("notes", "redis") is None  # the broker has not answered
    hb.turn(set())
    assert newest.get("notes", "redis") is None
    admin.answer()
    hb.turn(set())
    assert newest.get("notes", "redis") == 1_999_000
    assert newest.get("notes", "elasticsearch") == 1_999_000
    assert newest.get("tags", "redis") is None  # 4 records of tags unapplied
    assert admin.asks == [held]  # one request for every partition

    consumer.position_of[(TAGS, 0)] = 9  # applied since: the next heartbeat
    hb.turn(set())
    assert len(admin.asks) == 1  # the same heartbeat is not asked about again
    assert newest.get("tags", "redis") is None
    reader.heartbeat(1_999_500)
    turns(hb, admin, set())
    assert newest.get("tags", "redis") == 1_999_500
    assert newest.get("notes", "redis") == 1_999_500


def test_records_in_hand_keep_their_view_behind() -> None:
    held = {(NOTES, 0), (TAGS, 0)}
    hb, consumer, admin, reader, _conv, newest, _clock = heartbeats(held)
    consumer.position_of = {(NOTES, 0): 4, (TAGS, 0): 2}
    admin.high = {(NOTES, 0): 4, (TAGS, 0): 2}
    reader.heartbeat(1_999_000)
    turns(hb, admin, {(NOTES, 0)})  # read ahead, not handled yet
    assert newest.get("notes", "redis") is None
    assert newest.get("tags", "redis") == 1_999_000


def test_a_partition_assigned_meanwhile_keeps_its_view_behind() -> None:
    held = {(NOTES, 0)}
    hb, consumer, admin, reader, _conv, newest, _clock = heartbeats(held)
    consumer.position_of = {(NOTES, 0): 4, (NOTES, 2): 9}
    admin.high = {(NOTES, 0): 4, (NOTES, 2): 9}
    reader.heartbeat(1_999_000)
    hb.turn(set())
    held.add((NOTES, 2))  # a rebalance: not in the answer
    admin.answer()
    hb.turn(set())
    assert newest.get("notes", "redis") is None
    reader.heartbeat(1_999_500)
    turns(hb, admin, set())
    assert newest.get("notes", "redis") == 1_999_500


def test_a_partition_not_read_since_assigned_stands_at_its_committed_offset() -> None:
    held = {(NOTES, 0), (NOTES, 1), (TAGS, 0)}
    hb, consumer, admin, reader, _conv, newest, _clock = heartbeats(held)
    # Nothing consumed since assigned: notes-0 at its committed offset (its
    # end), notes-1 never committed (read from its start, empty), tags-0 at
    # a committed offset short of its end.
    consumer.committed_of = {(NOTES, 0): 12, (TAGS, 0): 3}
    admin.low = {(NOTES, 1): 5}
    admin.high = {(NOTES, 0): 12, (NOTES, 1): 5, (TAGS, 0): 4}
    reader.heartbeat(1_999_000)
    turns(hb, admin, set())
    assert newest.get("notes", "redis") == 1_999_000
    assert newest.get("tags", "redis") is None
    assert admin.asks[1] == {(NOTES, 1)}  # the start, only where needed
    reader.heartbeat(1_999_500)
    turns(hb, admin, set())
    assert consumer.committed_asked == 1  # kept while the partitions are held
    hb.forget([(TAGS, 0)])  # assigned anew: read again
    reader.heartbeat(1_999_900)
    turns(hb, admin, set())
    assert consumer.committed_asked == 2


def test_a_worker_holding_no_partition_of_a_view_reports_it_as_the_heartbeat() -> None:
    """A member of a group whose partitions are all of other views (or that
    holds none) has nothing of the view behind: its share is fresh."""
    hb, _consumer, admin, reader, _conv, newest, _clock = heartbeats(set())
    reader.heartbeat(1_999_000)
    turns(hb, admin, set())
    assert newest.get("notes", "redis") == 1_999_000
    assert newest.get("tags", "redis") == 1_999_000
    assert admin.asks == []


def test_a_registry_that_does_not_answer_is_asked_again_after_a_pause() -> None:
    hb, _consumer, admin, reader, conv, newest, clock = heartbeats(set())
    conv.known, conv.down = False, True
    reader.heartbeat(1_999_000)
    reader.heartbeat(1_999_500)
    turns(hb, admin, set())
    assert conv.asked == 1  # the second record waits out the pause
    assert newest.get("notes", "redis") is None
    conv.down = False
    reader.heartbeat(1_999_700)
    clock.t += REGISTRY_PAUSE_S - 1
    turns(hb, admin, set())
    assert conv.asked == 1
    clock.t += 2
    reader.heartbeat(1_999_900)
    turns(hb, admin, set())
    assert conv.asked == 2
    assert newest.get("notes", "redis") == 1_999_900


def test_the_reader_starts_at_the_end_of_every_heartbeat_partition() -> None:
    meta = SimpleNamespace(error=None, partitions=dict.fromkeys((0, 1, 2)))
    listing = SimpleNamespace(topics={HB: meta})
    hb, _consumer, _admin, reader, _conv, _newest, _clock = heartbeats(set())
    reader.list_topics = lambda topic, timeout: listing  # type: ignore[attr-defined]
    hb.start()
    assert [(tp.topic, tp.partition, tp.offset) for tp in reader.assigned] == [
        (HB, p, -1) for p in (0, 1, 2)
    ]


def test_a_heartbeat_reader_that_cannot_start_leaves_the_worker_running(
    caplog: Any,
) -> None:
    """Kafka refusing the reader's metadata costs the figure its heartbeats,
    never the worker its start."""
    worker, _cfg = _worker()
    closed = []

    class Refusing:
        def list_topics(self, topic: str, timeout: float) -> Any:
            raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

        def close(self) -> None:
            closed.append(True)

    worker.consumer_factory = lambda conf: Refusing()
    worker.consumer = Consumer()
    conf = {"group.id": "g", "client.id": "c"}
    assert worker._heartbeats(conf, HB, Admin()) is None
    assert closed == [True]
    assert "heartbeats not read" in caplog.text
