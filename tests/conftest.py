"""Suite-wide rules.

With ``READSIDE_REQUIRE_INTEGRATION=1`` (set by ``scripts/test`` and so by CI)
a run in which no integration test passed fails, so a broken stack can never
turn into a green run of unit tests alone. Under pytest-xdist the count is
the controller's (each test's report reaches it); with
``READSIDE_PASSED_FILE`` set the count is also appended to that file, for
``scripts/test`` to add up the runs it makes.
"""

from __future__ import annotations

import os

import pytest

_passed_integration = 0


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _passed_integration
    if report.when == "call" and report.passed and "integration" in report.keywords:
        _passed_integration += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("READSIDE_REQUIRE_INTEGRATION") != "1":
        return
    if hasattr(session.config, "workerinput"):  # an xdist worker: not the run
        return
    passed_file = os.environ.get("READSIDE_PASSED_FILE")
    if passed_file:
        with open(passed_file, "a") as f:
            f.write(f"{_passed_integration}\n")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"integration tests passed: {_passed_integration}")
    if _passed_integration == 0 and exitstatus == 0:
        if reporter is not None:
            reporter.write_line("no integration test passed: failing the run")
        session.exitstatus = 1
