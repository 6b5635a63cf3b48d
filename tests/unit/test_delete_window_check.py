"""Which partitions a worker's group left unread past their delete window
(pipeline.deletewindow); tests/integration/test_behind_delete_window.py
drives it on the stack."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from pipeline.deletewindow import behind_the_window, committed_offsets, dropping

pytestmark = pytest.mark.unit

HOUR = 3_600_000
NOW = 1_000 * HOUR


class Log:
    """A consumer over partitions of records at known times."""

    def __init__(self, parts: dict[tuple[str, int], Any]) -> None:
        #: (topic, partition) -> (committed, start, {offset: timestamp ms})
        self.parts = parts

    def committed(self, parts: list[TopicPartition], timeout: float) -> list[Any]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.parts[(tp.topic, tp.partition)][0]
            )
            for tp in parts
        ]

    def offsets_for_times(self, parts: list[TopicPartition], timeout: float) -> Any:
        out = []
        for tp in parts:
            stamps = self.parts[(tp.topic, tp.partition)][2]
            newer = [o for o, ts in sorted(stamps.items()) if ts >= tp.offset]
            out.append(
                TopicPartition(tp.topic, tp.partition, newer[0] if newer else -1)
            )
        return out

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> Any:
        _committed, start, stamps = self.parts[(tp.topic, tp.partition)]
        return start, max(stamps, default=start - 1) + 1


def _behind(parts: dict[tuple[str, int], Any]) -> list[Any]:
    log = Log(parts)
    committed = committed_offsets(log, [TopicPartition(t, p) for t, p in parts])
    return behind_the_window(log, committed, {"t": 24 * HOUR}, now_ms=lambda: NOW)


def _check(parts: dict[tuple[str, int], Any]) -> list[tuple[str, int]]:
    found = _behind(parts)
    return [(b.topic, b.partition) for b in found]


def test_unread_records_older_than_the_window_are_found() -> None:
    old, fresh = NOW - 30 * HOUR, NOW - HOUR
    assert _check(
        {
            ("t", 0): (5, 0, {5: old, 6: fresh}),  # next to read: 30 h old
            ("t", 1): (6, 0, {5: old, 6: fresh}),  # next to read: 1 h old
            ("t", 2): (7, 0, {5: old, 6: fresh}),  # read to the end
            ("t", 3): (-1001, 0, {5: old}),  # never committed: left out
            # 3 and 4 are gone: compaction removed them, which it does only
            # to records older than the window (min.compaction.lag.ms)
            ("t", 4): (3, 0, {5: fresh}),
        }
    ) == [("t", 0), ("t", 4)]


def test_records_deleted_before_the_group_read_them_are_found() -> None:
    fresh = NOW - HOUR
    assert _check({("t", 0): (2, 10, {10: fresh, 11: fresh})}) == [("t", 0)]
    said = _behind({("t", 0): (2, 10, {10: fresh})})[0].says(["orders"])
    assert "records 2-9 were deleted by the topic's retention" in said
    assert "again from the source: `readside snapshot orders --rebuild`" in said


def test_every_unread_record_older_than_the_window() -> None:
    """No record is recent enough: every unread one is past the window."""
    old = NOW - 30 * HOUR
    found = _behind({("t", 0): (1, 0, {0: old, 1: old, 2: old})})
    assert [(b.committed, b.in_window) for b in found] == [(1, 3)]
    assert "older than the topic's delete.retention.ms (24 h)" in found[0].says(["v"])


def test_only_topics_that_drop_records_are_said_with_their_views_loads() -> None:
    configs = {
        "a": {"cleanup.policy": "compact"},
        "b": {"cleanup.policy": "compact,delete", "retention.ms": str(7 * 24 * HOUR)},
        "c": {"cleanup.policy": "delete", "retention.ms": "-1"},
    }
    said = dropping(configs, {"a": ["x"], "b": ["y", "x"], "c": ["z"]})
    assert len(said) == 2
    assert said[0].startswith(
        "topic b has cleanup.policy compact,delete (retention.ms keeps records 168 h)"
    )
    assert said[0].endswith(
        "`readside snapshot x --from-source` and `readside snapshot y --from-source`"
    )
    assert "(retention.ms keeps records for ever, until retention.bytes)" in said[1]
