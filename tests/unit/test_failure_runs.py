"""The server's repeated tasks log a run of failures once, not per run:
:class:`query.failures.FailureRun`, as the checkpoint refresh of the
freshness figures uses it against a broker that is not there."""

from __future__ import annotations

import logging

import pytest

from pipeline.sourceconfig import KafkaConfig
from query import failures
from query.failures import FailureRun
from query.freshness import FreshnessCache

pytestmark = pytest.mark.unit


def test_a_run_logs_its_first_failure_a_line_per_interval_and_its_end(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = [0.0]
    monkeypatch.setattr(failures.time, "monotonic", lambda: clock[0])
    log = logging.getLogger("test.failures")
    caplog.set_level("INFO", logger="test.failures")
    run = FailureRun(log, "probe", "the old figures stay", interval_s=10)
    for second in range(25):  # a failure a second for 25 s
        clock[0] = float(second)
        run.failed(TimeoutError(f"timed out at {second}"))
    assert [r.getMessage() for r in caplog.records] == [
        "probe failed; the old figures stay until it succeeds",
        "probe still failing: 11 in a row, the last: TimeoutError: timed out at 10",
        "probe still failing: 21 in a row, the last: TimeoutError: timed out at 20",
    ]
    assert caplog.records[0].exc_info is not None
    run.succeeded()
    run.succeeded()  # nothing more to say
    assert caplog.records[-1].getMessage() == "probe succeeded again after 25 failures"
    assert len(caplog.records) == 4


def test_checkpoint_refreshes_against_no_broker_log_one_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kafka = KafkaConfig(bootstrap_servers="127.0.0.1:9")
    cache = FreshnessCache(kafka, "rs.checkpoints", timeout_s=0.2)
    caplog.set_level("WARNING", logger="query.freshness")
    try:
        for _ in range(3):
            cache._refresh()
    finally:
        cache.close()
    warned = [r for r in caplog.records if r.name == "query.freshness"]
    assert len(warned) == 1
    assert warned[0].exc_info is not None
    assert "checkpoint refresh topic=rs.checkpoints failed" in warned[0].getMessage()


class _Silent:
    """A consumer whose partition never delivers what its end offset says."""

    def poll(self, _timeout: float) -> None:
        return None

    def close(self) -> None:
        pass


def test_checkpoint_refreshes_that_never_reach_the_end_log_one_line_per_run(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow broker (ends known, records late): each refresh gives up after
    its timeout; the run is logged once, not once per refresh."""
    cache = FreshnessCache(KafkaConfig(), "rs.checkpoints", timeout_s=0.01)
    monkeypatch.setattr(cache, "_ensure_consumer", lambda: _Silent())
    monkeypatch.setattr(cache, "_ends", lambda _consumer: {0: 5, 1: 7})
    caplog.set_level("WARNING", logger="query.freshness")
    for _ in range(5):
        cache._refresh()
    warned = [r for r in caplog.records if r.name == "query.freshness"]
    assert len(warned) == 1
    assert "checkpoint refresh topic=rs.checkpoints failed" in warned[0].getMessage()
    assert "2 partition(s) not read to their end" in str(warned[0].exc_info[1])
    assert cache._failures.count == 5
