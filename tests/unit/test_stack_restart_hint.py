"""``stack up`` on a service that was already running with the settings of
an older readside (its probe ends "restart <name>") fails within seconds,
saying what to do, instead of waiting out the start timeout (240 s)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.errors import FatalError
from pipeline.stack import runner
from pipeline.stack.services import Service

pytestmark = pytest.mark.unit


class Outdated(Service):
    """A service whose pid file names this test's process (so it runs) and
    whose probe always answers ``problem``."""

    name = "outdated"

    def __init__(self, ctx: runner.Context, problem: str | None) -> None:
        super().__init__(ctx)
        self.problem = problem
        self.probes = 0

    def command(self) -> list[str]:
        return ["true"]

    def probe(self) -> str | None:
        self.probes += 1
        return self.problem


def _ctx(tmp_path: Path) -> runner.Context:
    ctx = runner.Context(
        cfg=StackConfig(data_dir=str(tmp_path)),
        data=tmp_path,
        installed=None,  # type: ignore[arg-type]
    )
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "outdated.pid").write_text(f"{os.getpid()}\n")
    return ctx


def test_a_running_service_that_asks_for_a_restart_fails_fast(tmp_path: Path) -> None:
    svc = Outdated(_ctx(tmp_path), "takes a wrong password over TCP: restart outdated")
    t0 = time.monotonic()
    with pytest.raises(FatalError) as failed:
        runner._wait_healthy(svc.ctx, svc, timeout=60, running_before=True)
    took = time.monotonic() - t0
    assert runner.RESTART_GRACE_S <= took < 30, took
    message = str(failed.value)
    assert "already running" in message
    assert "takes a wrong password over TCP: restart outdated" in message
    assert "`readside stack down` then `readside stack up`" in message
    assert svc.probes > 1  # probed through the grace, not refused at once


def test_a_service_this_call_started_is_waited_for(tmp_path: Path) -> None:
    """The same answer from a service the call just started (still opening
    its ports) is waited on until the timeout, as before."""
    svc = Outdated(_ctx(tmp_path), "TLS port 1 closed: restart outdated")
    with pytest.raises(FatalError, match="not healthy after 7s"):
        runner._wait_healthy(svc.ctx, svc, timeout=7, running_before=False)


def test_a_healthy_running_service_passes(tmp_path: Path) -> None:
    svc = Outdated(_ctx(tmp_path), None)
    runner._wait_healthy(svc.ctx, svc, timeout=5, running_before=True)
    assert svc.probes == 1
