"""The read-your-writes probe of ``python -m bench faults`` flags what it must."""

from __future__ import annotations

from typing import Any

from bench.faults import check
from bench.faults.nemesis import Event
from bench.faults.ryw import COUNTERS, Probe, Probed, Write, _ids, _shown
from bench.faults.source import AGG_VIEW
from query.answer import Answer, Freshness
from query.errors import NotYetFresh, StoreUnavailable

IDS = _ids(1)


def _agg(visits: int, placed: int, qty: int) -> dict[str, Any]:
    return {
        "id": IDS["customer"],
        "visits": visits,
        "orders": [
            {"id": 5, "placed": 99, "lines": []},
            {
                "id": IDS["order"],
                "placed": placed,
                "lines": [{"id": IDS["line"], "qty": qty, "product_id": 1}],
            },
        ],
    }


def test_shown_finds_each_counter_in_the_aggregate_and_table_documents() -> None:
    doc = _agg(3, 4, 5)
    assert _shown("visits", AGG_VIEW, doc, IDS) == 3
    assert _shown("placed", AGG_VIEW, doc, IDS) == 4
    assert _shown("qty", AGG_VIEW, doc, IDS) == 5
    assert _shown("placed", "orders", {"placed": 7}, IDS) == 7
    # the probe's order or line missing from the document: nothing shown
    assert _shown("qty", AGG_VIEW, {"visits": 1, "orders": []}, IDS) is None
    assert _shown("placed", AGG_VIEW, {"visits": 1}, IDS) is None


class _Client:
    """Answers (or raises) what it is given, in turn."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, Any, Any]] = []

    def get(self, view: str, ident: Any, *, min_lsn: Any) -> Answer:
        self.asked.append((view, ident, min_lsn))
        got = self.answers.pop(0)
        if isinstance(got, Exception):
            raise got
        return Answer(view, "redis", Freshness(watermark_lsn=200), doc=got)


def _probe() -> Probe:
    p = Probe.__new__(Probe)  # only _read's bookkeeping is used
    p.seen = Probed()
    import threading

    p._stop = threading.Event()
    return p


def _read(p: Probe, client: _Client, counter: str, view: str, wrote: int) -> None:
    (c,) = [c for c in COUNTERS if c.column == counter]
    write = Write(c, IDS, wrote, lsn=150, committed=0.0)
    p._read(client, "redis", view, IDS["customer"], write)  # type: ignore[arg-type]


def test_an_answer_below_the_committed_counter_is_stale() -> None:
    p = _probe()
    _read(p, _Client(_agg(3, 4, 5)), "qty", AGG_VIEW, 6)
    (stale,) = p.seen.stale
    assert (stale["wrote"], stale["shown"], stale["min_lsn"]) == (6, 5, "0/96")
    assert stale["watermark_lsn"] == "0/C8"


def test_a_missing_document_after_the_wait_is_stale() -> None:
    p = _probe()
    _read(p, _Client(None), "visits", "customers", 1)
    assert [s["shown"] for s in p.seen.stale] == [None]


def test_the_write_or_a_later_one_shown_is_not_stale() -> None:
    p = _probe()
    _read(p, _Client(_agg(3, 4, 5)), "qty", AGG_VIEW, 5)
    _read(p, _Client(_agg(3, 4, 9)), "qty", AGG_VIEW, 5)
    assert p.seen.stale == []
    assert p.seen.reads == 2


def test_a_wait_timed_out_is_counted_and_not_stale() -> None:
    p = _probe()
    _read(p, _Client(NotYetFresh(AGG_VIEW, 150, 100, 20.0)), "qty", AGG_VIEW, 6)
    assert (p.seen.not_fresh, p.seen.reads, p.seen.stale) == (1, 0, [])


def test_a_store_down_is_read_again_and_then_checked() -> None:
    p = _probe()
    down = StoreUnavailable(AGG_VIEW, ["redis"], "down")
    client = _Client(down, _agg(1, 1, 1))
    _read(p, client, "visits", AGG_VIEW, 2)
    assert p.seen.unavailable == {"redis": 1}
    assert len(client.asked) == 2
    assert [s["shown"] for s in p.seen.stale] == [1]


def test_check_ryw_attributes_each_stale_read_to_the_last_fault_before_it() -> None:
    probed = Probed(
        reads=2,
        stale=[
            {"t": 5.0, "sink": "redis", "view": AGG_VIEW},
            {"t": 0.5, "sink": "mongodb", "view": "orders"},
        ],
    )
    events = [Event("kill9", 1.0, 2.0), Event("freeze", 4.0, 9.0)]
    got = check.ryw(probed, events)
    assert [(v["kind"], v["after_fault"]) for v in got] == [
        ("ryw_stale", "freeze"),
        ("ryw_stale", None),
    ]
    assert Probed(waits=[0.1, 0.2, 0.3]).summary()["wait_p50_ms"] == 200


def test_each_counter_is_shown_in_the_documents_of_its_views() -> None:
    # every view a counter names must show it: a view that did not would
    # flag a stale read at every round
    docs = {
        AGG_VIEW: _agg(3, 4, 5),
        "customers": {"visits": 3},
        "orders": {"placed": 4},
    }
    values = {"visits": 3, "placed": 4, "qty": 5}
    for c in COUNTERS:
        assert c.row in IDS
        for view, doc_of in c.views:
            assert doc_of in IDS
            assert _shown(c.column, view, docs[view], IDS) == values[c.column]


def test_a_probe_that_stopped_on_an_error_or_read_nothing_fails_the_check() -> None:
    failed = check.ryw(Probed(writes=3, reads=2, error="RuntimeError('x')"), [])
    assert [v["kind"] for v in failed] == ["ryw_probe_failed"]
    unchecked = check.ryw(Probed(writes=5, not_fresh=5), [])
    assert [(v["kind"], v["writes"]) for v in unchecked] == [("ryw_unchecked", 5)]
    assert check.ryw(Probed(writes=1, reads=1), []) == []


def test_the_probe_keeps_the_error_that_ended_its_rounds() -> None:
    p = _probe()

    def boom() -> None:
        raise RuntimeError("probe row customers 800000000 is gone")

    p._run = boom  # type: ignore[method-assign]
    p._thread = None
    p.start()
    p.stop()
    assert p.seen.error == "RuntimeError('probe row customers 800000000 is gone')"
