"""The replication slot's warnings and how ``readside status`` shows the
connector and its slot."""

from __future__ import annotations

import pytest

from connectors.debezium import SlotState
from pipeline.status import render

pytestmark = pytest.mark.unit


def _slot(active: bool = True, wal_status: str = "reserved") -> SlotState:
    return SlotState("readside_shop", active, 512, 3 * 2**30, wal_status)


def test_an_active_slot_with_its_wal_reserved_needs_nothing():
    assert _slot().warnings() == []


def test_an_inactive_slot_says_how_much_wal_it_keeps_and_what_to_do():
    (warning,) = _slot(active=False).warnings()
    assert "readside_shop is inactive" in warning
    assert "3.0 GB of WAL" in warning
    assert "connector delete --drop-slot" in warning


def test_a_slot_that_lost_wal_says_how_the_tables_are_read_again():
    lost = _slot(active=False, wal_status="lost").warnings()
    assert "lost WAL it needed" in lost[0]
    assert "readside connector delete --drop-slot" in lost[0]
    assert "set source.snapshot_mode: when_needed" in lost[0]
    assert "readside snapshot VIEW --from-source" in lost[0]
    assert "is inactive" in lost[1]
    (unreserved,) = _slot(wal_status="unreserved").warnings()
    assert "past max_slot_wal_keep_size" in unreserved


def test_status_shows_a_failed_task_and_the_capture_warnings():
    slot = _slot(active=False)
    trace = "io.debezium.DebeziumException: cannot read\n\tat somewhere"
    text = render(
        {
            "views": [],
            "slot_lag_bytes": 512,
            "slot": {**slot.__dict__},
            "capture_warnings": slot.warnings(),
            "dead_letters": 0,
            "connector": {
                "connector": "shop-postgres",
                "state": "RUNNING",
                "tasks": [{"id": 0, "state": "FAILED", "trace": trace}],
            },
        }
    )
    assert "connector shop-postgres: RUNNING (task 0 FAILED)" in text
    assert (
        "warning: connector task 0 FAILED, nothing new reaches the topics: "
        "io.debezium.DebeziumException: cannot read" in text
    )
    assert "somewhere" not in text
    assert "replication slot lag: 512 bytes" in text
    assert "replication slot readside_shop: inactive, 3221225472 bytes of WAL" in text
    assert "warning: replication slot readside_shop is inactive" in text
