"""The bench's CPU accounting by process (bench/machine.py), on this machine."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import machine

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_a_service_counts_the_cpu_of_its_child_processes() -> None:
    """A service is its process tree: PostgreSQL's work is in its backends."""
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nend = time.process_time() + 0.6\n"
            "while time.process_time() < end: pass\ntime.sleep(30)",
        ]
    )
    try:
        before = machine.sample({"tree": os.getpid()})
        _spin(0.3)
        time.sleep(1.0)  # the child spins its 0.6 s meanwhile
        after = machine.sample({"tree": os.getpid()})
    finally:
        child.kill()
        child.wait()
    use = machine.usage(before, after, 1000)
    cpu = use["cpu_us_per_event"]
    assert cpu["self"] == pytest.approx(300, abs=60)  # µs per event of 1,000
    assert cpu["tree"] >= cpu["self"] + 400  # this process and the child
    assert 0.5 < use["busy_cores"] <= use["cores"]


def test_usage_splits_the_machine_busy_time() -> None:
    before = {
        "self": 1.0,
        "kafka": 5.0,
        "machine_busy": 100.0,
        "machine_total": 400.0,
        "wall": 10.0,
    }
    after = {
        "self": 3.0,
        "kafka": 6.0,
        "machine_busy": 104.0,
        "machine_total": 408.0,
        "wall": 14.0,
    }
    use = machine.usage(before, after, 1_000_000)
    assert use["cpu_us_per_event"] == {"self": 2.0, "kafka": 1.0, "other": 1.0}
    assert use["busy_cores"] == 1.0
    assert use["busy_share"] == 0.5


def test_pid_files_name_the_services(tmp_path: Path) -> None:
    assert machine.pids_in(tmp_path / "absent") == {}
    (tmp_path / "kafka.pid").write_text("123\n")
    (tmp_path / "redis.pid").write_text("not a pid")
    (tmp_path / "notes.txt").write_text("456")
    assert machine.pids_in(tmp_path) == {"kafka": 123}
