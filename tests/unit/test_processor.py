"""The batch processor: decode, route, build ops, coalesce, dead letters."""

from __future__ import annotations

from typing import Any

import pytest

from pipeline.decode import FakeMessage
from pipeline.events import UNCHANGED, Delete, Position, Upsert, table_version
from pipeline.processor import Processor, coalesce
from pipeline.types import PLACEHOLDER
from pipeline.viewconfig import TableViewConfig
from pipeline.views import TableView

pytestmark = pytest.mark.unit

TOPIC = "app.public.docs"
VIEW = "docs"

KEY_SCHEMA = {
    "type": "struct",
    "name": "app.public.docs.Key",
    "optional": False,
    "fields": [{"field": "id", "type": "int64", "optional": False}],
}
ROW_SCHEMA = {
    "type": "struct",
    "name": "app.public.docs.Value",
    "optional": True,
    "fields": [
        {"field": "id", "type": "int64", "optional": False},
        {"field": "title", "type": "string", "optional": True},
        {"field": "body", "type": "string", "optional": True},
    ],
}
VALUE_SCHEMA = {
    "type": "struct",
    "name": "app.public.docs.Envelope",
    "optional": False,
    "fields": [
        {**ROW_SCHEMA, "field": "before"},
        {**ROW_SCHEMA, "field": "after"},
        {
            "field": "source",
            "type": "struct",
            "optional": False,
            "fields": [
                {"field": "schema", "type": "string", "optional": False},
                {"field": "table", "type": "string", "optional": False},
                {"field": "lsn", "type": "int64", "optional": True},
                {"field": "ts_ms", "type": "int64", "optional": True},
                {"field": "sequence", "type": "string", "optional": True},
            ],
        },
        {"field": "op", "type": "string", "optional": False},
    ],
}


def event(
    offset: int,
    op: str,
    ident: int,
    row: dict[str, Any] | None = None,
    partition: int = 0,
    sequence: str | None = None,
) -> FakeMessage:
    """A Debezium record of table ``public.docs`` as JsonConverter writes it."""
    after = None if op == "d" else {"id": ident, **(row or {})}
    before = {"id": ident, "title": None, "body": None} if op == "d" else None
    payload = {
        "before": before,
        "after": after,
        "op": op,
        "source": {
            "schema": "public",
            "table": "docs",
            "lsn": 1000 + offset,
            "ts_ms": 1_700_000_000_000 + offset,
            **({"sequence": sequence} if sequence is not None else {}),
        },
    }
    return FakeMessage.of_json(
        TOPIC,
        {"schema": KEY_SCHEMA, "payload": {"id": ident}},
        {"schema": VALUE_SCHEMA, "payload": payload},
        partition=partition,
        offset=offset,
    )


def tombstone(offset: int, ident: int) -> FakeMessage:
    key = FakeMessage.of_json(
        TOPIC, {"schema": KEY_SCHEMA, "payload": {"id": ident}}, None, offset=offset
    )
    return key


def make_processor(view_filter: Any = None, transform: Any = None) -> Processor:
    cfg = TableViewConfig(table="public.docs", sinks=["memory"])
    view = TableView(VIEW, cfg, 0, view_filter, transform)
    return Processor({VIEW: view}, {TOPIC: [VIEW]})


def test_coalesce_two_upserts_keeps_newest_version():
    older = Upsert(VIEW, "1", 5, {"id": 1, "title": "old"})
    newer = Upsert(VIEW, "1", 9, {"id": 1, "title": "new"})
    assert coalesce([newer, older]) == [newer]
    assert coalesce([older, newer]) == [newer]


def test_coalesce_unchanged_field_carried_from_older_upsert():
    older = Upsert(VIEW, "1", 5, {"id": 1, "title": "a", "body": "BIG"})
    newer = Upsert(VIEW, "1", 9, {"id": 1, "title": "b", "body": UNCHANGED})
    (op,) = coalesce([older, newer])
    assert isinstance(op, Upsert)
    assert op.version == 9
    assert op.doc == {"id": 1, "title": "b", "body": "BIG"}


def test_coalesce_unchanged_after_older_delete_stays_unchanged():
    gone = Delete(VIEW, "1", 5)
    newer = Upsert(VIEW, "1", 9, {"id": 1, "body": UNCHANGED})
    (op,) = coalesce([gone, newer])
    assert isinstance(op, Upsert)
    assert op.unchanged_fields == ["body"]


def test_coalesce_distinct_docs_all_kept():
    ops = [Upsert(VIEW, str(i), i, {"id": i}) for i in range(5)]
    assert sorted(op.doc_id for op in coalesce(ops)) == [str(i) for i in range(5)]


def test_processor_batch_of_one_row_gives_newest_op_with_offset_version():
    batch = make_processor().process(
        [
            event(10, "c", 1, {"title": "a", "body": "x"}),
            event(11, "u", 1, {"title": "b", "body": "y"}),
            event(12, "u", 1, {"title": "c", "body": "z"}),
        ]
    )
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Upsert)
    assert op.version == table_version(0, 12)
    assert op.doc == {"id": 1, "title": "c", "body": "z"}
    assert op.position == Position(TOPIC, 0, 12)
    assert batch.dead == []


def test_processor_toast_placeholder_filled_from_same_batch():
    batch = make_processor().process(
        [
            event(1, "c", 7, {"title": "a", "body": "LARGE"}),
            event(2, "u", 7, {"title": "b", "body": PLACEHOLDER}),
        ]
    )
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Upsert)
    assert op.doc == {"id": 7, "title": "b", "body": "LARGE"}


def test_processor_toast_placeholder_alone_stays_unchanged_marker():
    batch = make_processor().process(
        [event(2, "u", 7, {"title": "b", "body": PLACEHOLDER})]
    )
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Upsert)
    assert op.doc["body"] is UNCHANGED


def test_processor_toast_placeholder_filled_from_the_source_row():
    asked: list[int] = []

    def fill(events: Any) -> dict[Position, Any]:
        # SourceRows.fill: every event of a table view is offered, the images
        # that lack values come back filled
        asked.extend(ev.key["id"] for ev in events)
        return {
            ev.position: {**ev.after, "body": "FROM SOURCE"}
            for ev in events
            if ev.after["body"] is UNCHANGED
        }

    batch = make_processor().process(
        [
            event(1, "c", 8, {"title": "a", "body": "whole"}),
            event(2, "u", 7, {"title": "b", "body": PLACEHOLDER}),
        ],
        fill=fill,
    )
    assert asked == [8, 7]
    ops = {op.doc_id: op for op in batch.ops[VIEW]}
    assert isinstance(ops["7"], Upsert)
    assert ops["7"].doc == {"id": 7, "title": "b", "body": "FROM SOURCE"}
    assert ops["8"].doc["body"] == "whole"


def test_processor_toast_row_gone_from_the_source_writes_nothing():
    batch = make_processor().process(
        [event(2, "u", 7, {"title": "b", "body": PLACEHOLDER})],
        fill=lambda events: {ev.position: None for ev in events},
    )
    assert batch.ops.get(VIEW, []) == []
    assert batch.dead == []
    assert batch.events == 1
    assert batch.gone == 1  # a rebuild's catch-up goes on to its delete


def test_processor_delete_then_tombstone_gives_versioned_delete():
    batch = make_processor().process(
        [
            event(3, "c", 2, {"title": "a"}),
            event(4, "d", 2),
            tombstone(5, 2),
        ]
    )
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Delete)
    # The tombstone deletes at its own offset (it is the delete's only trace
    # once compaction ran), so the batch's newest op is the tombstone's.
    assert (op.doc_id, op.version) == ("2", table_version(0, 5))


def test_processor_tombstone_alone_deletes_at_its_offset():
    batch = make_processor().process([tombstone(9, 2)])
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Delete)
    assert (op.doc_id, op.version) == ("2", table_version(0, 9))
    assert op.position == Position(TOPIC, 0, 9)
    assert batch.dead == []


def test_processor_truncate_event_dead_lettered_not_ignored():
    payload = {
        "before": None,
        "after": None,
        "op": "t",
        "source": {"schema": "public", "table": "docs", "lsn": 7, "ts_ms": 1},
    }
    msg = FakeMessage.of_json(
        TOPIC, None, {"schema": VALUE_SCHEMA, "payload": payload}, offset=3
    )
    batch = make_processor().process([msg])
    assert batch.ops == {}
    (dead,) = batch.dead
    assert (dead.reason, dead.view) == ("contract", VIEW)
    assert "truncate event of public.docs" in dead.error


def test_processor_row_leaving_filter_becomes_delete():
    proc = make_processor(view_filter=lambda row: row.get("title") != "hidden")
    batch = proc.process([event(8, "u", 3, {"title": "hidden", "body": "b"})])
    (op,) = batch.ops[VIEW]
    assert isinstance(op, Delete)
    assert op.version == table_version(0, 8)


@pytest.mark.parametrize(
    "value",
    [b"\x00\xffnot json", b'{"hello": "world"}', b'{"schema": {}, "payload": 1}'],
)
def test_processor_undecodable_record_dead_lettered_batch_continues(value):
    bad = FakeMessage(TOPIC, value, None, 0, 21)
    batch = make_processor().process(
        [
            event(20, "c", 1, {"title": "a"}),
            bad,
            event(22, "c", 2, {"title": "b"}),
        ]
    )
    assert sorted(op.doc_id for op in batch.ops[VIEW]) == ["1", "2"]
    (dead,) = batch.dead
    assert dead.reason == "decode"
    assert dead.message is bad
    assert dead.error


def test_processor_transform_error_dead_letters_only_that_record():
    from pipeline.errors import BadRecord

    def fragile(doc: dict[str, Any]) -> dict[str, Any]:
        if doc["title"] == "boom":
            raise BadRecord("transform", "boom")
        return doc

    batch = make_processor(transform=fragile).process(
        [
            event(30, "c", 1, {"title": "ok"}),
            event(31, "c", 2, {"title": "boom"}),
            event(32, "c", 3, {"title": "fine"}),
        ]
    )
    assert sorted(op.doc_id for op in batch.ops[VIEW]) == ["1", "3"]
    (dead,) = batch.dead
    assert (dead.reason, dead.view) == ("transform", VIEW)
    assert dead.message.offset() == 31


def test_processor_update_without_after_image_is_contract_dead_letter():
    msg = event(40, "u", 1, {"title": "x"})
    raw = msg.value().replace(b'"after":{"id":1,"title":"x"}', b'"after":null')
    batch = make_processor().process([FakeMessage(TOPIC, raw, msg.key(), 0, 40)])
    (dead,) = batch.dead
    assert dead.reason == "contract"
    assert VIEW not in batch.ops
