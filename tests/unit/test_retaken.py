"""A table read whole again after its partition streamed changes
(pipeline.retaken): the processor finds it, the worker takes the marks of the
views reading its topic away. tests/integration/test_source_position_lost.py
runs it on the stack."""

from __future__ import annotations

import json
from typing import Any

import pytest
from test_processor import KEY_SCHEMA, TOPIC, make_processor
from test_processor import VALUE_SCHEMA as ENVELOPE
from test_redelivery_window import FakeLog
from test_worker_gaps import Marks, _table_view_topic, _worker

from pipeline.decode import FakeMessage
from pipeline.errors import FatalError
from pipeline.redelivery import Redeliveries
from pipeline.retaken import Retaken

pytestmark = pytest.mark.unit


def _with_snapshot(field: dict[str, Any]) -> dict[str, Any]:
    """The envelope's ``source`` with Debezium's ``snapshot`` in it."""
    if field["field"] != "source":
        return field
    snapshot = {"field": "snapshot", "type": "string", "optional": True}
    return {**field, "fields": [*field["fields"], snapshot]}


VALUE_SCHEMA = {
    **ENVELOPE,
    "fields": [_with_snapshot(f) for f in ENVELOPE["fields"]],
}


def record(offset: int, op: str, lsn: int, snapshot: str = "false") -> FakeMessage:
    """A change (``op`` c/u) or a snapshot's row (``op`` r, ``snapshot``
    true/first/last/incremental) of row ``offset`` at ``lsn``."""
    source: dict[str, Any] = {"schema": "public", "table": "docs", "lsn": lsn}
    if op == "r":
        source["snapshot"] = snapshot
    else:
        source["sequence"] = json.dumps([str(lsn - 1), str(lsn)])
    payload = {"before": None, "after": {"id": offset}, "op": op, "source": source}
    return FakeMessage.of_json(
        TOPIC,
        {"schema": KEY_SCHEMA, "payload": {"id": offset}},
        {"schema": VALUE_SCHEMA, "payload": payload},
        offset=offset,
    )


def found(msgs: list[FakeMessage], mark: str | None = None) -> list[Retaken]:
    return list(processor(mark).process(msgs).retaken.values())


def processor(mark: str | None = None) -> Any:
    """A worker's processor, whose group committed ``mark`` before."""
    made = make_processor()
    made.redeliveries = Redeliveries(100, FakeLog(mark, []))
    return made


def test_an_initial_snapshot_before_the_stream_is_no_table_read_again() -> None:
    first = [record(o, "r", 500, "first" if o == 0 else "true") for o in range(3)]
    assert found([*first, record(3, "c", 510), record(4, "u", 520)]) == []


def test_a_snapshot_after_the_partition_streamed_is_found_once() -> None:
    msgs = [record(0, "c", 500), record(1, "u", 510)]
    msgs += [record(2 + o, "r", 900, "true") for o in range(3)]
    assert found(msgs) == [Retaken(TOPIC, 0, 2, 900, 510)]


def test_a_snapshot_after_an_earlier_snapshot_is_found() -> None:
    """No change streamed in between: the rows deleted meanwhile are lost
    all the same."""
    msgs = [record(o, "r", 500, "true") for o in range(2)]
    msgs += [record(2 + o, "r", 900, "true") for o in range(2)]
    assert found(msgs) == [Retaken(TOPIC, 0, 2, 900, 500)]


def test_the_committed_mark_tells_a_worker_that_reads_the_snapshot_first() -> None:
    """The partition streamed up to LSN 301, or read a snapshot at LSN 500,
    under the worker before."""
    msgs = [record(7, "r", 900, "true"), record(8, "r", 900, "last")]
    assert found(msgs, mark="300/301") == [Retaken(TOPIC, 0, 7, 900, 301)]
    assert found(msgs, mark="@500;77") == [Retaken(TOPIC, 0, 7, 900, 500)]
    assert found(msgs, mark="300/301@900") == []  # that snapshot, said before
    assert found(msgs, mark=None) == []  # the group read nothing of it


def test_a_snapshot_read_again_is_found_until_noted_then_committed() -> None:
    """A batch given up is read again: the loss must be found again until
    the worker said it; then the mark committed carries the snapshot."""
    proc = processor("300/301")
    msgs = [record(7, "r", 900, "true"), record(8, "r", 900, "true")]
    assert list(proc.process(msgs).retaken) == [(TOPIC, 0)]
    assert list(proc.process(msgs).retaken) == [(TOPIC, 0)]  # given up, again
    proc.redeliveries.note_snapshot((TOPIC, 0), 900)
    assert list(proc.process(msgs).retaken) == []
    assert proc.redeliveries.metadata((TOPIC, 0)) == "300/301@900"
    assert found([record(9, "u", 905)], mark="300/301@900") == []


def test_an_incremental_snapshot_after_the_stream_is_no_table_read_again() -> None:
    """readside's own loads (--from-source, --where) are incremental."""
    msgs = [record(0, "c", 500), record(1, "r", 900, "incremental")]
    assert found(msgs) == []


def test_the_worker_takes_the_marks_away_once_naming_the_load_from_source(
    caplog,
) -> None:
    worker, cfg = _worker()
    _view, topic, readers = _table_view_topic(cfg)
    worker.loads = Marks()  # type: ignore[assignment]
    worker.processor = processor()
    retaken = Retaken(topic, 1, 40, 0x1_0000_0900, 0x1_0000_0510)
    worker._retaken([retaken])
    said = (
        f"topic {topic} holds its table read whole again (a snapshot at LSN "
        "1/900, from offset 40 of partition 1, which read up to LSN 1/510 "
        "before): the connector lost its position in the WAL (its replication "
        "slot dropped or made again, a failover, its offsets reset), so the "
        "rows deleted meanwhile keep their documents"
    )
    assert worker.loads.lost == [dict.fromkeys(readers, said)]  # type: ignore[attr-defined]
    assert worker.loads.loads == ["--from-source"]  # type: ignore[attr-defined]
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == [f"{said}; views: {', '.join(readers)}"]
    worker._retaken([retaken._replace(offset=90)])  # the same snapshot, later
    assert len(worker.loads.lost) == 1  # type: ignore[attr-defined]
    assert worker.processor.redeliveries.metadata((topic, 1)) == "@4294969600"


def test_a_views_epoch_that_starts_past_the_snapshot_is_not_touched() -> None:
    worker, cfg = _worker()
    view, topic, readers = _table_view_topic(cfg)
    worker, _ = _worker({view: {(topic, 1): 50}})
    worker.loads = Marks()  # type: ignore[assignment]
    worker.processor = processor()
    worker._retaken([Retaken(topic, 1, 40, 900, 510)])
    assert sorted(worker.loads.lost[0]) == [v for v in readers if v != view]  # type: ignore[attr-defined]


def test_a_rebuilds_catch_up_that_reads_a_table_read_again_stops() -> None:
    worker, cfg = _worker()
    _view, topic, readers = _table_view_topic(cfg)
    assert worker.loads is None
    views = " / ".join(readers)
    with pytest.raises(FatalError, match=f"readside snapshot {views} --from-source"):
        worker._retaken([Retaken(topic, 0, 4, 900, 510)])
