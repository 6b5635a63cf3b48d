"""The conformance suite every sink must pass, shipped with the package.

Each case takes an opened sink and the name of one of its views whose target
is empty, writes canned batches and checks what the sink reports and stores.
A failing case raises :class:`AssertionError` naming the sink, the case and
what differed. Cases use their own document ids, so they may share a view,
but :func:`ids_exclude_tombstones` and the other cases that look at
:meth:`Sink.ids` expect only their own documents in it: give each case a
fresh view when running them all.

Run it with :func:`run_all`, or one case at a time from :data:`CASES` (as the
test modules do, so each case is reported on its own).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from connectors.base import LoadMarks, Sink, Stored, WriteResult
from pipeline.events import (
    UNCHANGED,
    Delete,
    Document,
    DocumentOp,
    Upsert,
    table_version,
)

Case = Callable[[Sink, str], None]

#: A realistic table-view version: epoch 3, offset 1,000,000.
BASE = table_version(3, 1_000_000)


def _check(sink: Sink, condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(f"sink {sink.name}: {message}")


def _canon(doc: Any) -> str:
    """Compare documents by JSON text, so that ``1`` and ``1.0`` differ."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False)


def _write(
    sink: Sink,
    ops: Sequence[DocumentOp],
    applied: int,
    stale: int = 0,
    rejected: int = 0,
    what: str = "batch",
) -> WriteResult:
    result = sink.write(ops)
    got = (result.applied, result.stale, len(result.rejected))
    _check(
        sink,
        got == (applied, stale, rejected),
        f"{what}: expected applied/stale/rejected = {(applied, stale, rejected)}, "
        f"got {got} (rejected: {[r for _, r in result.rejected]})",
    )
    return result


def _expect_doc(
    sink: Sink, view: str, doc_id: str, version: int, doc: Document
) -> None:
    stored = sink.fetch(view, [doc_id]).get(doc_id)
    _check(sink, stored is not None, f"document {doc_id!r} is missing")
    assert stored is not None  # for the type checker
    _check(
        sink,
        stored.version == version,
        f"document {doc_id!r}: version {stored.version}, expected {version}",
    )
    _check(
        sink,
        stored.doc is not None and _canon(stored.doc) == _canon(doc),
        f"document {doc_id!r}: stored {_short(stored)}, expected {_short(doc)}",
    )


def _expect_tombstone(sink: Sink, view: str, doc_id: str, version: int) -> None:
    stored = sink.fetch(view, [doc_id]).get(doc_id)
    _check(
        sink,
        stored == Stored(version, None),
        f"document {doc_id!r}: expected a tombstone at {version}, got {_short(stored)}",
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


# -- cases ------------------------------------------------------------------


def insert(sink: Sink, view: str) -> None:
    docs = {f"ins-{n}": {"n": n, "name": f"row {n}"} for n in range(5)}
    ops = [Upsert(view, i, BASE + n, d) for n, (i, d) in enumerate(docs.items())]
    _write(sink, ops, applied=5, what="insert")
    for n, (doc_id, doc) in enumerate(docs.items()):
        _expect_doc(sink, view, doc_id, BASE + n, doc)
    got = sink.fetch(view, ["ins-0", "ins-missing"])
    _check(sink, set(got) == {"ins-0"}, f"fetch of a missing id returned {set(got)}")
    _check(sink, sink.ids(view) == set(docs), f"ids() = {sink.ids(view)}")


def update_replaces_document(sink: Sink, view: str) -> None:
    _write(sink, [Upsert(view, "upd", BASE, {"a": 1, "gone": "x"})], applied=1)
    _write(sink, [Upsert(view, "upd", BASE + 1, {"a": 2, "new": [1]})], applied=1)
    _expect_doc(sink, view, "upd", BASE + 1, {"a": 2, "new": [1]})


def delete_leaves_tombstone(sink: Sink, view: str) -> None:
    _write(sink, [Upsert(view, "del", BASE, {"a": 1})], applied=1)
    _write(sink, [Delete(view, "del", BASE + 1)], applied=1, what="delete")
    _expect_tombstone(sink, view, "del", BASE + 1)
    _check(sink, "del" not in sink.ids(view), "ids() lists a deleted document")
    _write(sink, [Delete(view, "del-never", BASE)], applied=1, what="delete unknown")
    _expect_tombstone(sink, view, "del-never", BASE)


def stale_write_ignored(sink: Sink, view: str) -> None:
    _write(sink, [Upsert(view, "st", BASE + 5, {"v": "new"})], applied=1)
    _write(sink, [Upsert(view, "st", BASE + 4, {"v": "old"})], applied=0, stale=1)
    _expect_doc(sink, view, "st", BASE + 5, {"v": "new"})
    _write(sink, [Delete(view, "st", BASE + 3)], applied=0, stale=1, what="old delete")
    _expect_doc(sink, view, "st", BASE + 5, {"v": "new"})


def versions_compare_as_numbers(sink: Sink, view: str) -> None:
    # 10 > 9 as numbers but "10" < "9" as strings; big values lose precision
    # as doubles (2**53 + 1 == 2**53 in a Lua number).
    _write(sink, [Upsert(view, "num", 10, {"v": 10})], applied=1)
    _write(sink, [Upsert(view, "num", 9, {"v": 9})], applied=0, stale=1)
    _write(sink, [Upsert(view, "num", 100, {"v": 100})], applied=1)
    _expect_doc(sink, view, "num", 100, {"v": 100})
    big = 2**53
    _write(sink, [Upsert(view, "big", big, {"v": 0})], applied=1)
    _write(sink, [Upsert(view, "big", big + 1, {"v": 1})], applied=1, what="2**53+1")
    _expect_doc(sink, view, "big", big + 1, {"v": 1})
    top = 9 * 10**18  # fits an int64 and an ES version
    _write(sink, [Upsert(view, "top", top, {"v": 2})], applied=1)
    _write(sink, [Upsert(view, "top", top - 1, {"v": 3})], applied=0, stale=1)
    _expect_doc(sink, view, "top", top, {"v": 2})


def replay_is_idempotent(sink: Sink, view: str) -> None:
    ops: list[DocumentOp] = [
        Upsert(view, f"rep-{n}", BASE + n, {"n": n}) for n in range(4)
    ]
    ops.append(Delete(view, "rep-gone", BASE + 9))
    _write(sink, ops, applied=5)
    _write(sink, ops, applied=0, stale=5, what="replayed batch")
    for n in range(4):
        _expect_doc(sink, view, f"rep-{n}", BASE + n, {"n": n})
    _expect_tombstone(sink, view, "rep-gone", BASE + 9)


def tombstone_blocks_resurrection(sink: Sink, view: str) -> None:
    _write(sink, [Upsert(view, "zombie", BASE + 1, {"a": 1})], applied=1)
    _write(sink, [Delete(view, "zombie", BASE + 5)], applied=1)
    late = [Upsert(view, "zombie", BASE + 3, {"a": 3})]
    _write(sink, late, applied=0, stale=1, what="late upsert")
    _expect_tombstone(sink, view, "zombie", BASE + 5)
    _check(sink, "zombie" not in sink.ids(view), "a late upsert resurrected")
    _write(sink, [Upsert(view, "zombie", BASE + 7, {"a": 7})], applied=1, what="re-add")
    _expect_doc(sink, view, "zombie", BASE + 7, {"a": 7})


def delete_of_unknown_blocks_older_upsert(sink: Sink, view: str) -> None:
    # A delete of a document the store never held (a row outside the view's
    # filter, an insert still in the dead-letter topic), then the older upsert
    # replayed: the tombstone must win. Documents carry a ``tenant`` field so
    # that a view routed by it (Elasticsearch ``routing_field``) is tested too.
    ids = [f"unk-{n}" for n in range(6)]
    _write(sink, [Delete(view, i, BASE + 5) for i in ids], applied=6, what="delete")
    older = [Upsert(view, i, BASE + 3, {"tenant": f"t{i}", "a": 3}) for i in ids]
    _write(sink, older, applied=0, stale=6, what="older upsert after delete")
    for doc_id in ids:
        _expect_tombstone(sink, view, doc_id, BASE + 5)
    _check(sink, not sink.ids(view), f"resurrected: {sink.ids(view)}")
    newer = [Upsert(view, i, BASE + 7, {"tenant": f"t{i}", "a": 7}) for i in ids]
    _write(sink, newer, applied=6, what="newer upsert")
    for doc_id in ids:
        _expect_doc(sink, view, doc_id, BASE + 7, {"tenant": f"t{doc_id}", "a": 7})
    _write(sink, [Delete(view, i, BASE + 9) for i in ids], applied=6, what="delete")
    _write(sink, newer, applied=0, stale=6, what="replayed upsert")
    _check(sink, not sink.ids(view), f"resurrected: {sink.ids(view)}")


def primary_key_change(sink: Sink, view: str) -> None:
    _write(sink, [Upsert(view, "pk-old", BASE, {"code": "A"})], applied=1)
    moved: list[DocumentOp] = [
        Delete(view, "pk-old", BASE + 1),
        Upsert(view, "pk-new", BASE + 2, {"code": "A"}),
    ]
    _write(sink, moved, applied=2, what="key change")
    _expect_tombstone(sink, view, "pk-old", BASE + 1)
    _expect_doc(sink, view, "pk-new", BASE + 2, {"code": "A"})
    _check(sink, sink.ids(view) == {"pk-new"}, f"ids() = {sink.ids(view)}")


def unicode_and_large_documents(sink: Sink, view: str) -> None:
    text = "Grüße, 世界! עברית مرحبا 🚀👩🏽‍💻 e\u0301 \t\n\"'\\ <&>"
    docs: dict[str, Document] = {
        "uni-ключ": {"text": text, "ключ": "значение", "emoji🙂": "😀"},
        "uni:a b/c?d": {"text": "id with separators"},
        "large": {"blob": "ü" * (1 << 19) + "x" * (1 << 19), "n": 1},
    }
    ops = [Upsert(view, i, BASE, d) for i, d in docs.items()]
    _write(sink, ops, applied=3, what="unicode and large")
    for doc_id, doc in docs.items():
        _expect_doc(sink, view, doc_id, BASE, doc)
    _check(sink, sink.ids(view) == set(docs), f"ids() = {sink.ids(view)}")


def nested_round_trip(sink: Sink, view: str) -> None:
    doc: Document = {
        "int": 7,
        "neg": -42,
        "float": 2.5,
        "whole_float": 3.0,
        "big_int": 2**53 + 1,
        "money": "12345678901234567890.12",
        "true": True,
        "false": False,
        "null": None,
        "empty_str": "",
        "empty_list": [],
        "empty_obj": {},
        # Arrays hold one type each: Elasticsearch maps every value of a field
        # alike (a jsonb column of mixed arrays needs an unindexed mapping).
        "list": [1, 2, None],
        "strings": ["two", "", "drei"],
        "objs": [{"six": 6}, {"six": 7, "x": None}],
        "obj": {"a": {"b": {"c": [{"d": "deep"}]}}, "n": None},
        "lines": [{"sku": "A-1", "qty": 2}, {"sku": "B-2", "qty": 1}],
    }
    _write(sink, [Upsert(view, "nested", BASE, doc)], applied=1)
    _expect_doc(sink, view, "nested", BASE, doc)


def nested_arrays_round_trip(sink: Sink, view: str) -> None:
    # PostgreSQL multi-dimensional arrays and jsonb produce arrays of arrays.
    doc: Document = {"matrix": [[4, 5], [6]], "cube": [[[1]], [[2, 3]]]}
    _write(sink, [Upsert(view, "matrix", BASE, doc)], applied=1)
    _expect_doc(sink, view, "matrix", BASE, doc)


def unchanged_filled_from_store(sink: Sink, view: str) -> None:
    first = {"title": "t1", "body": "large text", "tags": ["a"]}
    _write(sink, [Upsert(view, "toast", BASE, first)], applied=1)
    update = {"title": "t2", "body": UNCHANGED, "tags": UNCHANGED}
    _write(sink, [Upsert(view, "toast", BASE + 1, update)], applied=1, what="UNCHANGED")
    _expect_doc(
        sink,
        view,
        "toast",
        BASE + 1,
        {"title": "t2", "body": "large text", "tags": ["a"]},
    )
    stale = {"title": "t0", "body": UNCHANGED}
    _write(sink, [Upsert(view, "toast", BASE, stale)], applied=0, stale=1, what="old")


def unchanged_rejected_without_stored_doc(sink: Sink, view: str) -> None:
    _write(sink, [Delete(view, "toast-dead", BASE)], applied=1)
    ops: list[DocumentOp] = [
        Upsert(view, "toast-none", BASE, {"title": "x", "body": UNCHANGED}),
        Upsert(view, "toast-dead", BASE + 1, {"title": "y", "body": UNCHANGED}),
        Upsert(view, "toast-ok", BASE, {"title": "z"}),
    ]
    result = _write(sink, ops, applied=1, rejected=2, what="UNCHANGED without doc")
    ids = sorted(op.doc_id for op, _ in result.rejected)
    _check(sink, ids == ["toast-dead", "toast-none"], f"rejected {ids}")
    got = sink.fetch(view, ["toast-none", "toast-dead"])
    _check(sink, "toast-none" not in got, "a rejected upsert was stored")
    _expect_tombstone(sink, view, "toast-dead", BASE)


def ids_exclude_tombstones(sink: Sink, view: str) -> None:
    ops: list[DocumentOp] = [Upsert(view, f"id-{n}", BASE, {"n": n}) for n in range(3)]
    _write(sink, ops, applied=3)
    _write(sink, [Delete(view, "id-1", BASE + 1)], applied=1)
    _check(sink, sink.ids(view) == {"id-0", "id-2"}, f"ids() = {sink.ids(view)}")
    got = sink.fetch(view, ["id-0", "id-1", "id-2"])
    _check(sink, got.get("id-1") == Stored(BASE + 1, None), "fetch lost the tombstone")


def large_batch_counts(sink: Sink, view: str) -> None:
    # More documents than one Redis script call or Mongo command takes, and a
    # mix of applied and stale in one batch.
    n = 1000
    first = [Upsert(view, f"bulk-{i}", BASE + 10, {"i": i}) for i in range(n)]
    _write(sink, first, applied=n, what="first bulk")
    second: list[DocumentOp] = []
    for i in range(n):
        version = BASE + (11 if i % 2 else 9)  # odd ids newer, even ids stale
        if i % 10 == 1:
            second.append(Delete(view, f"bulk-{i}", version))
        else:
            second.append(Upsert(view, f"bulk-{i}", version, {"i": -i}))
    _write(sink, second, applied=n // 2, stale=n // 2, what="mixed bulk")
    stored = sink.fetch(view, [f"bulk-{i}" for i in range(n)])
    for i in range(n):
        want = Stored(BASE + 10, {"i": i})
        if i % 10 == 1:
            want = Stored(BASE + 11, None)
        elif i % 2:
            want = Stored(BASE + 11, {"i": -i})
        _check(
            sink,
            stored.get(f"bulk-{i}") == want,
            f"bulk-{i}: {stored.get(f'bulk-{i}')}",
        )
    live = {f"bulk-{i}" for i in range(n) if i % 10 != 1}
    _check(sink, sink.ids(view) == live, "ids() after the mixed bulk differ")


def load_mark_set_kept_and_dropped(sink: Sink, view: str) -> None:
    """A sink that keeps load marks (:class:`~connectors.base.LoadMarks`)
    marks only when asked, keeps the mark through writes, takes it away when
    asked (the documents stay), and loses it with the documents."""
    if not isinstance(sink, LoadMarks):
        return
    _check(sink, not sink.loaded(view), "a view never marked reads as loaded")
    _write(sink, [Upsert(view, "mark-1", BASE, {"n": 1})], applied=1)
    _check(sink, not sink.loaded(view), "a write marked the view loaded")
    sink.mark_loaded(view)
    _check(sink, sink.loaded(view), "the view is not loaded once marked")
    _write(sink, [Upsert(view, "mark-2", BASE, {"n": 2})], applied=1)
    sink.mark_loaded(view)  # again: harmless
    _check(sink, sink.loaded(view), "a write or a second mark took the mark")
    sink.unmark(view)
    _check(sink, not sink.loaded(view), "the view reads as loaded once unmarked")
    sink.unmark(view)  # again: harmless
    _check(sink, sink.ids(view) == {"mark-1", "mark-2"}, "unmark took documents")
    sink.mark_loaded(view)
    _check(sink, sink.loaded(view), "the view is not loaded once marked again")
    drop = getattr(sink, "drop", None)
    if drop is not None:
        drop(view)
        _check(sink, not sink.loaded(view), "the mark outlived the documents")


CASES: dict[str, Case] = {
    case.__name__: case
    for case in (
        insert,
        update_replaces_document,
        delete_leaves_tombstone,
        stale_write_ignored,
        versions_compare_as_numbers,
        replay_is_idempotent,
        tombstone_blocks_resurrection,
        delete_of_unknown_blocks_older_upsert,
        primary_key_change,
        unicode_and_large_documents,
        nested_round_trip,
        nested_arrays_round_trip,
        unchanged_filled_from_store,
        unchanged_rejected_without_stored_doc,
        ids_exclude_tombstones,
        large_batch_counts,
        load_mark_set_kept_and_dropped,
    )
}


def run_all(new_sink: Callable[[], tuple[Sink, str]]) -> None:
    """Run every case, each on a fresh sink and view from ``new_sink``.

    ``new_sink`` returns an opened sink and the name of an empty view of it;
    the caller closes and cleans up what it made.
    """
    for case in CASES.values():
        sink, view = new_sink()
        case(sink, view)
