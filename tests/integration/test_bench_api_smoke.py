"""``python -m bench api`` on a few requests: every row of the report is
there with a positive rate, the ASGI server's ceiling among them, and the
commit-to-readable probes answer
while the background writer commits."""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_bench

pytestmark = pytest.mark.integration

ROWS = ("http", "redis", "ceiling", "http_library", "redis_library", "client")


def test_bench_api_reports_every_row_with_positive_rates(tmp_path: Path) -> None:
    results, done = run_bench(
        tmp_path / "api.json",
        "api",
        *("--requests", "400", "--probes", "4", "--load-rate", "20"),
        *("--workdir", str(tmp_path / "work")),
    )
    reads = results["reads"]
    for name in ROWS:
        assert reads[name]["requests"] > 0, name
        assert reads[name]["per_s"] > 0, name
        assert reads[name]["p99_ms"] >= reads[name]["p50_ms"] > 0, name
    for method in ("min_lsn", "poll"):
        assert results["commit_to_read"][method]["p50_ms"] > 0, method
    # the background writer (a process of its own) committed while probed
    assert results["commit_to_read"]["load_writes_per_s"] > 0
    assert "| the ASGI server alone (a constant answer), lean client |" in done.stdout
    assert "The ASGI server alone reaches" in done.stdout
