"""The history checker of ``python -m bench faults`` flags what it must."""

from __future__ import annotations

import pytest

from bench.faults import check, parse_args, table
from bench.faults.nemesis import Event, schedule
from bench.faults.readers import History, Readers, Seen


def _readers() -> Readers:
    return Readers.__new__(Readers)  # only the bookkeeping of _see is used


def _see(
    r: Readers, state: dict, version: int | None, live: bool | None, t: float
) -> None:
    r._see(state, "redis", "orders", "7", t, version, live)


def _fresh() -> tuple[Readers, dict[tuple[str, str], Seen]]:
    import threading

    r = _readers()
    r.history = History()
    r.lock = threading.Lock()
    return r, {}


def test_readers_version_going_back_is_flagged() -> None:
    r, state = _fresh()
    _see(r, state, 5, True, 1.0)
    _see(r, state, 9, True, 2.0)
    _see(r, state, 6, True, 3.0)
    assert [a["kind"] for a in r.history.anomalies] == ["version_backwards"]
    assert r.history.anomalies[0]["before"] == 9


def test_readers_live_after_tombstone_is_resurrection() -> None:
    r, state = _fresh()
    _see(r, state, 5, True, 1.0)
    _see(r, state, 8, False, 2.0)
    _see(r, state, 9, True, 3.0)
    assert [a["kind"] for a in r.history.anomalies] == ["resurrected"]


def test_readers_live_after_absent_is_resurrection_but_absent_first_is_not() -> None:
    r, state = _fresh()
    _see(r, state, None, None, 0.5)  # not written yet: no anomaly
    _see(r, state, 5, True, 1.0)
    _see(r, state, None, None, 2.0)  # gone
    _see(r, state, 5, True, 3.0)
    assert [a["kind"] for a in r.history.anomalies] == ["resurrected"]
    assert r.history.anomalies[0]["deleted_seen"] == "absent"


def test_readers_steady_versions_flag_nothing() -> None:
    r, state = _fresh()
    for t, v in enumerate([1, 1, 2, 3, 3]):
        _see(r, state, v, True, float(t))
    _see(r, state, 4, False, 9.0)
    _see(r, state, None, None, 10.0)  # a tombstone that is gone is still deleted
    assert r.history.anomalies == []
    assert len(r.history.transitions) == 4


def test_check_reader_attributes_to_last_fault_and_rebuild_window() -> None:
    hist = History()
    hist.anomalies = [
        {
            "t": 15.0,
            "sink": "redis",
            "view": "orders",
            "id": "1",
            "kind": "version_backwards",
        },
        {
            "t": 50.0,
            "sink": "redis",
            "view": "orders",
            "id": "2",
            "kind": "resurrected",
        },
    ]
    events = [
        Event("kill9", 5.0, 6.0),
        Event("rebuild", 10.0, 20.0, {"view": "orders"}),
        Event("poison", 40.0, 40.0),
    ]
    got = check.reader(hist, events)
    assert [(v["after_fault"], v["in_rebuild_window"]) for v in got] == [
        ("rebuild", True),
        ("poison", False),
    ]


def test_schedule_applies_every_kind_inside_the_fault_window() -> None:
    import random

    kinds = ["kill9", "poison", "snapshot"]
    got = schedule(random.Random(1), kinds, 70.0)
    assert sorted(k for _t, k in got) == sorted(kinds)
    assert all(0 <= t <= 56 for t, _k in got)
    assert got == schedule(random.Random(1), kinds, 70.0)  # the seed replays it


def test_table_counts_violations_and_failing_seeds() -> None:
    runs = [
        {
            "seed": 3,
            "converged": True,
            "converge_s": 4.0,
            "faults": [{"kind": "kill9"}],
            "violations": [],
        },
        {
            "seed": 4,
            "converged": False,
            "converge_s": None,
            "faults": [{"kind": "kill9"}, {"kind": "poison"}],
            "violations": [{"check": "dead_letters", "kind": "poison_lost"}],
        },
    ]
    rows = {r["fault"]: r for r in table(runs, ["kill9", "poison"])}
    assert rows["kill9"]["runs"] == 2
    assert rows["kill9"]["violations"] == 1
    assert rows["poison"]["failing_seeds"] == [4]
    assert rows["all"]["not_converged"] == 1
    assert rows["all"]["converge_p50_s"] == 4.0


def _cmd(view: str, start: float, end: float, code: int, tail: str = "") -> dict:
    args = ["snapshot", view, "--rebuild", "--chunk-size", "50"]
    return {
        "view": view,
        "args": args,
        "started": start,
        "ended": end,
        "exit": code,
        "log_tail": tail,
    }


REFUSED_TAIL = (
    "error: another `readside snapshot orders --rebuild` is running into "
    "sinks.redis (readside rebuild orders pid 7 on h, from 127.0.0.1); wait"
)


def test_check_command_takes_a_refusal_only_beside_a_rebuild_of_its_view() -> None:
    first = _cmd("orders", 10.0, 40.0, 0)
    twin = _cmd("orders", 12.0, 14.0, 2, REFUSED_TAIL)
    assert check.command("rebuild", first, [first, twin]) == []
    assert check.command("rebuild", twin, [first, twin]) == []
    # the same refusal with no rebuild of the view running: the lock leaked
    alone = _cmd("orders", 50.0, 52.0, 2, REFUSED_TAIL)
    other_view = _cmd("customers", 49.0, 60.0, 0)
    got = check.command("rebuild", alone, [first, other_view, alone])
    assert [v["kind"] for v in got] == ["rebuild_refused_alone"]
    # any other failure, and a command that never ended, are violations
    failed = _cmd("orders", 12.0, 14.0, 2, "error: something else")
    assert [v["kind"] for v in check.command("rebuild", failed, [first, failed])] == [
        "rebuild_failed"
    ]
    hung = _cmd("orders", 12.0, 14.0, 0) | {"exit": None}
    assert [v["kind"] for v in check.command("snapshot", hung, [hung])] == [
        "snapshot_timeout"
    ]


def test_the_registry_kind_runs_only_on_avro_records() -> None:
    json_run = parse_args(["--faults", "all", "--seed", "1"])
    assert "registry" not in json_run.faults
    assert "ddl" in json_run.faults
    avro_run = parse_args(["--faults", "all", "--format", "avro", "--seed", "1"])
    assert "registry" in avro_run.faults
    assert parse_args(["--seed", "1"]).faults[-1] == "ddl"  # the default takes it
    assert "ddl" in parse_args(["--quick", "--seed", "1"]).faults
    assert "kafka" not in parse_args(["--quick", "--seed", "1"]).faults
    with pytest.raises(SystemExit):
        parse_args(["--faults", "registry", "--seed", "1"])
