"""A table view's compacted topic replayed into its sinks, by one process or several.

A table view's documents carry the versions of the records they come from
(docs/design.md), so a replay writes each record at the version the stream
wrote it with: the version guard keeps the newest of a document's records
whatever order they arrive in, as it does for the stream's own replays
after a crash or a rebalance. The topic can therefore be replayed in pieces
side by side: :func:`split` cuts its offsets into ``--writers`` runs of equal
length (a partition may be cut in two), each replayed by a process of its own
(:func:`run_shares`) with its own consumer, decoder, sinks and dead-letter
producer. Processes, not threads: decoding the records is Python work, and
one process decodes on one core at a time.

A replay does not resume: a run that was stopped or killed replays the
whole topic again (the versions make that harmless). The parent process
records the progress the processes report (:class:`Report`) and stops them
all, after the chunk each is writing, when it is asked to stop or one of
them fails; a process whose parent is gone stops the same way.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass
from functools import partial
from typing import Any

from confluent_kafka import Consumer, Message, TopicPartition

from connectors.base import Sink
from pipeline import deletewindow, kafkaclient, layout, logs
from pipeline.aggregate.reader import Reader
from pipeline.config import Config
from pipeline.decode import RawMessage
from pipeline.errors import ConfigError, ReadsideError, TransientError
from pipeline.events import DocumentOp
from pipeline.kafkaclient import topic_configs
from pipeline.processor import Batch, Processor, ops_for_sink
from pipeline.sinkwriter import Backoff, open_sinks
from pipeline.snapshot.prefetch import ReadAhead
from pipeline.snapshot.rejects import Origin, Rejects
from pipeline.source.converter import converter_for
from pipeline.toast import SourceRows
from pipeline.views import View
from pipeline.worker import build_sinks

logger = logging.getLogger(__name__)

#: how often the parent looks whether to stop while it waits for reports
_POLL_S = 0.2
#: reports recorded together at most (each record of progress waits for Kafka)
_MAX_REPORTS = 1000
#: how long stopped processes get to finish their chunk before they are killed
_JOIN_S = 60.0


@dataclass(frozen=True)
class Span:
    """The records of one partition a replay writes: offsets ``start`` up to
    ``end`` (exclusive), the partition's bounds when the replay began."""

    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


def group(cfg: Config) -> str:
    """The consumer group a replay's consumers name (it commits nothing)."""
    return f"{cfg.kafka.group_id}.snapshot"


def topic_spans(consumer: Consumer, topic: str) -> list[Span]:
    """The non-empty partitions of ``topic``, from their low to their high
    watermark (records produced later are the stream's to apply)."""
    md = consumer.list_topics(topic, timeout=10).topics.get(topic)
    if md is None or md.error is not None:
        raise ConfigError(f"topic {topic} does not exist (connector applied?)")
    spans = []
    for p in sorted(md.partitions):
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), 10)
        if high > low:
            spans.append(Span(p, low, high))
    return spans


def dropping_policy(cfg: Config, topic: str) -> str | None:
    """``topic``'s ``cleanup.policy`` if it includes ``delete`` (the broker
    asked), else None."""
    settings = topic_configs(kafkaclient.admin(cfg.kafka), [topic]).get(topic, {})
    return deletewindow.delete_policy(settings)


def require_whole(cfg: Config, view: str, topic: str) -> None:
    """Refuse to build table view ``view`` from ``topic`` unless the topic
    keeps every row: compacted, and never cut by retention.

    A topic whose ``cleanup.policy`` includes ``delete`` (made by hand, or
    by a broker with its defaults) drops the records of rows that have not
    changed within its retention; a replay of it would load only the rows
    changed lately, and the view would be called whole (a rebuild takes a
    new epoch instead: :mod:`pipeline.snapshot.epoch`).

    Raises:
        ConfigError: the topic deletes old records.
    """
    policy = dropping_policy(cfg, topic)
    if policy is not None:
        raise ConfigError(
            f"topic {topic} has cleanup.policy {policy}: it drops the records of "
            "rows that did not change within its retention, so the view would "
            "be loaded from part of its rows. Load it from the source instead: "
            f"readside snapshot {view} --from-source (and make the topic "
            f"compacted: kafka-configs --alter --entity-type topics --entity-name "
            f"{topic} --add-config cleanup.policy=compact)"
        )


def split(spans: Sequence[Span], n: int) -> list[list[Span]]:
    """Cut ``spans`` into at most ``n`` shares of equal offsets (they differ
    by one at most), each a run of consecutive offsets in partition order: a
    partition may be cut between two shares, and a share holds at most one
    piece of each partition. No share is empty."""
    total = sum(s.size for s in spans)
    n = max(1, min(n, total))
    shares: list[list[Span]] = [[] for _ in range(n)]
    share, room = 0, _share_size(total, n, 0)
    for span in sorted(spans, key=lambda s: s.partition):
        start = span.start
        while start < span.end:
            if room == 0:
                share += 1
                room = _share_size(total, n, share)
            take = min(room, span.end - start)
            shares[share].append(Span(span.partition, start, start + take))
            start += take
            room -= take
    return [s for s in shares if s]


def _share_size(total: int, n: int, i: int) -> int:
    """The offsets of share ``i`` of ``n`` over ``total``: the first ones
    take the remainder."""
    return total // n + (1 if i < total % n else 0)


#: a chunk's ops written, and how many of them were dead-lettered
Write = Callable[[list[DocumentOp], Origin], int]
#: progress: records replayed, of them dead-lettered, in how many chunks
Done = Callable[[int, int, int], None]


def _replay(
    consumer: Consumer,
    processor: Processor,
    fill: Callable[..., Any],
    topic: str,
    spans: Sequence[Span],
    chunk_size: int,
    write: Write,
    done: Done,
    stopping: Callable[[], bool],
) -> None:
    """Replay ``spans`` of ``topic`` chunk by chunk: each chunk is decoded,
    made into the view's ops (``fill`` completes unchanged TOAST values from
    the source), written, then reported as ``done(records, dead_letters)``.
    The next chunk is consumed and decoded in a thread while the last one is
    written (:class:`~pipeline.snapshot.prefetch.ReadAhead`; only that
    thread uses ``consumer`` and ``processor``). Ends after a chunk once
    ``stopping()``."""
    consumer.assign([TopicPartition(topic, s.partition, s.start) for s in spans])
    ends = {s.partition: s.end for s in spans}
    read_chunks = read_to_ends(consumer, topic, ends, chunk_size, stopping)
    views = list(processor.views)

    def read(_after: object) -> tuple[Batch, list[DocumentOp], int] | None:
        msgs = next(read_chunks, None)
        if msgs is None:
            return None
        batch = processor.process(msgs, fill=fill)
        return batch, ops_for_sink(batch, views), len(msgs)

    with ReadAhead(read, lambda _chunk: True, None) as chunks:
        for batch, ops, records in chunks:
            dead = write(ops, partial(_message, batch.messages))
            done(records, dead, 1)
            if stopping():
                break


def read_to_ends(
    consumer: Any,
    topic: str,
    ends: dict[int, int],
    size: int,
    stopping: Callable[[], bool] = lambda: False,
    stall_s: float | None = None,
) -> Iterator[list[Message]]:
    """The records of ``topic``'s assigned partitions below ``ends``
    (partition -> offset, exclusive), at most ``size`` a batch, until each
    partition reached its end or ``stopping()``. A partition leaves ``ends``
    once reached, and is paused: the rest of it is another share's, or new.
    A partition whose records end before its end (compaction removed the
    last ones) is reached once the consumer's position is there.

    Raises:
        TransientError: ``stall_s`` passed without a record (a broker gone).
    """
    last = time.monotonic()
    while ends and not stopping():
        got = consumer.consume(size, 1.0)
        if got:
            last = time.monotonic()
        msgs = []
        for m in got:
            if m.error() is not None:
                continue
            part, offset = m.partition() or 0, m.offset() or 0
            end = ends.get(part)
            if end is None:
                continue
            if offset < end:
                msgs.append(m)
            if offset + 1 >= end:
                del ends[part]
                consumer.pause([TopicPartition(topic, part)])
        if msgs:
            yield msgs
            continue
        for tp in consumer.position(consumer.assignment()):
            if tp.offset >= ends.get(tp.partition, 0):
                ends.pop(tp.partition, None)  # compaction left a gap at the end
        if stall_s is not None and time.monotonic() - last > stall_s:
            raise TransientError(
                f"topic {topic} not read to its end: no record for {stall_s:.0f}s "
                f"(partitions left {sorted(ends)})"
            )


def _message(messages: Mapping[Any, RawMessage], op: DocumentOp) -> RawMessage:
    """The record a table view's op came from."""
    assert op.position is not None
    return messages[op.position]


@dataclass
class Replayer:
    """Replays partitions of ``view``'s topic in this process, until
    ``stopping()``."""

    cfg: Config
    view: View
    stopping: Callable[[], bool]

    def run(
        self,
        spans: Sequence[Span],
        sinks: Mapping[str, Sink],
        rejects: Rejects,
        chunk_size: int,
        done: Done,
    ) -> None:
        """Replay ``spans`` in this process into ``sinks`` (open)."""
        topic = self.cfg.source.topic(self.view.cfg.table)
        processor = Processor(
            {self.view.name: self.view},
            {topic: [self.view.name]},
            converter=converter_for(self.cfg.kafka),
        )
        # Unchanged TOAST values come from the source rows: after compaction
        # the records that set them may be gone, and a new sink holds nothing.
        dsn = (self.cfg.source.lookup_dsn or self.cfg.source.dsn).get_secret_value()
        consumer = kafkaclient.consumer(
            self.cfg.kafka,
            {
                "group.id": group(self.cfg),
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            },
        )
        with closing(Reader(dsn)) as reader:
            try:
                _replay(
                    consumer,
                    processor,
                    SourceRows(reader).fill,
                    topic,
                    spans,
                    chunk_size,
                    partial(rejects.write, sinks),
                    done,
                    self.stopping,
                )
            finally:
                consumer.close()


# ------------------------------------------------------------ several processes
@dataclass(frozen=True)
class Share:
    """One process's part of a replay (sent to it, so plain values only)."""

    number: int
    cfg: Config
    view: str
    sinks: list[str]
    spans: list[Span]
    chunk_size: int
    log_level: int


@dataclass(frozen=True)
class Report:
    """What a replay process tells its parent: a chunk written (``records``,
    ``dead_letters``), its end (``finished``), or the error it ended with."""

    number: int
    records: int = 0
    dead_letters: int = 0
    finished: bool = False
    error: BaseException | None = None


def run_shares(
    cfg: Config,
    view: str,
    sinks: Sequence[str],
    shares: Sequence[list[Span]],
    chunk_size: int,
    done: Done,
    stopping: Callable[[], bool],
) -> None:
    """Replay each share in a process of its own; ``done(records,
    dead_letters)`` in this thread for each chunk any of them wrote.

    Raises:
        the first error a process ended with (the others are stopped after
        their chunk): a :class:`~pipeline.errors.TransientError` is waited out
        by the caller like one of its own.
    """
    ctx = multiprocessing.get_context("spawn")
    reports: Any = ctx.Queue()
    stop = ctx.Event()
    level = logging.getLogger().getEffectiveLevel()
    procs = [
        ctx.Process(
            target=_share_main,
            args=(
                Share(i, cfg, view, list(sinks), spans, chunk_size, level),
                reports,
                stop,
            ),
            name=f"readside-replay-{i}",
            daemon=True,
        )
        for i, spans in enumerate(shares)
    ]
    for proc in procs:
        proc.start()
    running = set(range(len(procs)))
    error: BaseException | None = None
    try:
        while running:
            if stopping() or error is not None:
                stop.set()
            # A process writes its last report before it exits: one that had
            # exited before this wait and is still running here never sent it.
            exited = {i: procs[i].exitcode for i in running}
            try:
                got = [reports.get(timeout=_POLL_S)]
            except queue.Empty:
                for i, code in exited.items():
                    if code is not None:
                        running.discard(i)
                        error = error or ReadsideError(
                            f"replay process {i} ended (exit code {code}) "
                            "before it finished its partitions"
                        )
                continue
            # what else came meanwhile: recorded at once, not one by one
            while len(got) < _MAX_REPORTS:
                try:
                    got.append(reports.get_nowait())
                except queue.Empty:
                    break
            records = dead_letters = chunks = 0
            for report in got:
                if report.error is not None:
                    running.discard(report.number)
                    error = error or report.error
                elif report.finished:
                    running.discard(report.number)
                else:
                    records += report.records
                    dead_letters += report.dead_letters
                    chunks += 1
            if chunks:
                done(records, dead_letters, chunks)
    finally:
        stop.set()
        for proc in procs:
            proc.join(_JOIN_S)
            if proc.is_alive():
                logger.error("replay process %s did not stop: killing it", proc.name)
                proc.kill()
                proc.join()
        reports.close()
    if error is not None:
        raise error


def _share_main(share: Share, reports: Any, stop: Any) -> None:
    """A replay process: its share, reported chunk by chunk."""
    logs.setup(share.log_level)
    from pipeline.startup import tune_gc

    tune_gc()
    parent = os.getppid()
    asked = [False]

    def ask_stop(*_args: object) -> None:
        asked[0] = True

    # A terminal's Ctrl-C and a service manager's SIGTERM reach the whole
    # process group: stop after the chunk, as the parent does.
    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)

    def stopping() -> bool:
        return asked[0] or stop.is_set() or os.getppid() != parent

    def done(records: int, dead: int, _chunks: int) -> None:
        reports.put(Report(share.number, records, dead))

    try:
        cfg = share.cfg
        view = layout.recorded_views(cfg, [share.view])[share.view]
        backoff = partial(Backoff.of, cfg.worker)
        with ExitStack() as stack:
            sinks = build_sinks(cfg, share.sinks)
            for sink in sinks.values():
                stack.callback(sink.close)
            open_sinks(sinks, backoff(), stopping)
            rejects = Rejects(cfg, backoff, stopping)
            Replayer(cfg, view, stopping).run(
                share.spans, sinks, rejects, share.chunk_size, done
            )
        reports.put(Report(share.number, finished=True))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        reports.put(Report(share.number, error=_portable(exc)))
    finally:
        reports.close()
        if os.getppid() == parent:
            reports.join_thread()  # every report in the pipe before the exit
        else:  # nobody reads them: do not wait for room in the pipe
            reports.cancel_join_thread()


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it survives the trip to the parent, else an error of the
    same kind that names it (a TransientError stays one)."""
    try:
        pickle.loads(pickle.dumps(exc))  # noqa: S301 - our own, before it is sent
    except Exception:  # noqa: BLE001 - any refusal to pickle
        kind = type(exc)
        base: type[BaseException] = next(
            (k for k in kind.__mro__ if k.__module__ == "pipeline.errors"),
            ReadsideError,
        )
        return base(f"{kind.__name__}: {exc}")
    return exc
