"""``python -m bench faults --quick --seed 1``: every quick fault ran, no violation.

Quick mode applies the worker-level fault kinds (kill -9, a worker frozen
past its session timeout, workers added and removed, poison records, a
snapshot and a rebuild in the middle) and a migration of the source (a
column widened or narrowed); the service kinds stop services every test on
the stack shares.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_bench

# exclusive: a minute of faults under a full write load, its waits timed
pytestmark = [pytest.mark.integration, pytest.mark.exclusive]

QUICK_KINDS = {
    "kill9",
    "freeze",
    "add_worker",
    "remove_worker",
    "poison",
    "snapshot",
    "rebuild",
    "ddl",
}


def test_bench_faults_quick_mode_applies_every_kind_without_violations(
    tmp_path: Path,
) -> None:
    results, done = run_bench(
        tmp_path / "faults.json", "faults", "--quick", "--seed", "1", timeout_s=420
    )
    (run,) = results["runs"]
    assert results["violations"] == 0, run.get("violations")
    assert set(results["kinds_applied"]) == QUICK_KINDS
    for kind, count in results["kinds_applied"].items():
        assert count > 0, kind
    assert run["converged"]
    assert run["dead_letters"]["poison_injected"] > 0
    assert run["workload"]["transactions"] > 0
    assert run["readers"]["observations"] > 0
    assert done.stdout.strip().splitlines()[-1] == "violations=0"
