"""Whether a worker's group fell further behind than its topics keep deletes.

The table topics are compacted: Kafka removes a delete's tombstone once it
is older than the topic's ``delete.retention.ms`` (``kafka.delete_window_ms``
for the topics the connector creates; docs/design.md, *compacted topics and
deletes*). A worker whose next record is older than that may never see some
deletes, so its stores would keep those rows for good: nothing else tells it
they existed. The same holds, for every kind of record, when a topic's
retention deleted records the group had not read yet (its committed offset
below the partition's start).

:func:`behind_the_window` finds such partitions when a worker starts, and
``readside status`` (:func:`read_marks` once per partition, :func:`behind`
per view and sink) while a group is behind. It
says so, naming the views to rebuild (``readside snapshot VIEW --rebuild``,
which the workers keep running beside); it does not stop the worker, whose
catch-up is right for every other change and which a rebuild needs running.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import TopicPartition

#: Kafka's own default ``delete.retention.ms`` (a topic that does not say)
KAFKA_DEFAULT_MS = 86_400_000


@dataclass(frozen=True)
class Behind:
    """A partition whose unread records may have lost deletes."""

    topic: str
    partition: int
    committed: int
    #: the partition's first offset (records before it were deleted)
    start: int
    #: the first offset within the topic's delete window (the end if none)
    in_window: int
    window_ms: int

    @property
    def dropped(self) -> bool:
        """Whether records the group had not read were deleted (not only
        tombstones compacted away)."""
        return self.committed < self.start

    def says(self, views: Iterable[str]) -> str:
        names = sorted(views)
        rebuild = " and ".join(f"`readside snapshot {v} --rebuild`" for v in names)
        if self.dropped:
            return (
                f"{self.topic}[{self.partition}]: records {self.committed}-"
                f"{self.start - 1} were deleted by the topic's retention before "
                f"this group read them: the changes in them are in no store of "
                f"the view(s) {', '.join(names)}. Build them again from the "
                f"source: {rebuild} (the workers keep running meanwhile)"
            )
        what = (
            f"its records from offset {self.committed} (next to read) to "
            f"{self.in_window} are older than the topic's delete.retention.ms "
            f"({self.window_ms / 3_600_000:g} h), so compaction may have "
            "removed tombstones of deletes this group never applied"
        )
        return (
            f"{self.topic}[{self.partition}]: {what}; the view(s) "
            f"{', '.join(names)} may keep rows deleted at the source. Run "
            f"{rebuild} (the workers keep running meanwhile), and keep "
            "kafka.delete_window_ms above the longest time a worker may be behind"
        )


Part = tuple[str, int]


@dataclass(frozen=True)
class Marks:
    """Where a partition starts, where its delete window begins, where it ends."""

    start: int
    #: the first offset within the topic's delete window (the end if none)
    in_window: int
    end: int


def windows_of(configs: Mapping[str, Mapping[str, str]]) -> dict[str, int]:
    """Each topic's ``delete.retention.ms`` of its ``configs``."""
    return {
        t: int(c.get("delete.retention.ms") or KAFKA_DEFAULT_MS)
        for t, c in configs.items()
    }


def delete_policy(settings: Mapping[str, str]) -> str | None:
    """A topic's ``cleanup.policy`` (of its effective ``settings``) if it
    includes ``delete``, which drops whole old segments; else None."""
    policy = settings.get("cleanup.policy", "delete")
    return policy if "delete" in policy.split(",") else None


def dropping(
    configs: Mapping[str, Mapping[str, str]], readers: Mapping[str, Iterable[str]]
) -> list[str]:
    """What to say of each topic whose ``cleanup.policy`` includes ``delete``
    (``readers``: topic -> the views that read it).

    Such a topic drops whole old segments, with them the only record of
    every row that did not change within its retention: a worker further
    behind than that, a first start, a replay or a rebuild of it, a sink
    added later: none can get those rows from it
    (:func:`pipeline.snapshot.replay.require_whole` refuses; a first start
    leaves its views unmarked, :mod:`pipeline.loaded`). The topics the
    connector makes are compacted; this is a topic made by hand or by a
    broker's defaults.
    """
    out = []
    for topic, c in sorted(configs.items()):
        policy = delete_policy(c)
        if policy is None:
            continue
        ms = int(c.get("retention.ms") or -1)
        keeps = "for ever, until retention.bytes" if ms < 0 else f"{ms / 3_600_000:g} h"
        loads = " and ".join(
            f"`readside snapshot {v} --from-source`" for v in sorted(readers[topic])
        )
        out.append(
            f"topic {topic} has cleanup.policy {policy} (retention.ms keeps "
            f"records {keeps}): it drops the only record of each row that does "
            "not change within that, so no replay, rebuild, new sink or worker "
            "that far behind can get those rows from it; make it compacted "
            f"(kafka-configs --alter --entity-type topics --entity-name {topic} "
            f"--add-config cleanup.policy=compact), and load what it dropped "
            f"with {loads}"
        )
    return out


def read_marks(
    consumer: Any,
    parts: Iterable[Part],
    windows: Mapping[str, int],
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    timeout_s: float = 10.0,
) -> dict[Part, Marks]:
    """The :class:`Marks` of each of ``parts`` (``windows``: topic ->
    ``delete.retention.ms``), read by ``consumer`` (any group)."""
    wanted = sorted(set(parts))
    if not wanted:
        return {}
    now = now_ms()
    asked = [
        TopicPartition(t, p, now - windows.get(t, KAFKA_DEFAULT_MS)) for t, p in wanted
    ]
    firsts = {
        (tp.topic, tp.partition): tp.offset
        for tp in consumer.offsets_for_times(asked, timeout=timeout_s)
    }
    out = {}
    for topic, part in wanted:
        start, end = consumer.get_watermark_offsets(
            TopicPartition(topic, part), timeout=timeout_s
        )
        first = firsts.get((topic, part), -1)
        out[(topic, part)] = Marks(start, end if first < 0 else first, end)
    return out


def behind(
    committed: Mapping[Part, int],
    marks: Mapping[Part, Marks],
    windows: Mapping[str, int],
) -> list[Behind]:
    """The partitions whose ``committed`` offset (the next record a group
    reads) leaves unread records older than their topic's delete window, or
    lies below records deleted before it read them.

    Offsets missing between the committed one and the window's first count
    as older than the window: compaction removes only records older than
    ``min.compaction.lag.ms``, which the connector sets to the same window.
    Leave out partitions without a committed offset: a group that never
    committed holds nothing yet, and a compacted topic read from its start
    lacks a deleted row altogether.
    """
    found = []
    for (topic, part), offset in sorted(committed.items()):
        m = marks.get((topic, part))
        if m is not None and (offset < m.start or offset < min(m.in_window, m.end)):
            window = windows.get(topic, KAFKA_DEFAULT_MS)
            found.append(Behind(topic, part, offset, m.start, m.in_window, window))
    return found


def behind_the_window(
    consumer: Any,
    committed: Mapping[Part, int],
    windows: Mapping[str, int],
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    timeout_s: float = 10.0,
) -> list[Behind]:
    """:func:`behind` of one group's ``committed`` offsets, their marks read
    by ``consumer``."""
    found = read_marks(consumer, committed, windows, now_ms, timeout_s)
    return behind(committed, found, windows)


def committed_offsets(
    consumer: Any, parts: Iterable[TopicPartition], timeout_s: float = 10.0
) -> dict[Part, int]:
    """``consumer``'s group's committed offsets of ``parts`` (those it has)."""
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in consumer.committed(list(parts), timeout=timeout_s)
        if tp.offset >= 0
    }
