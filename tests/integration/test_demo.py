"""``readside demo`` end to end on the local stack (``readside stack up``)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration


def test_demo_run_matches_every_store_and_exits_zero() -> None:
    done = subprocess.run(
        ["readside", "demo"], capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    for store in ("redis", "elasticsearch", "mongodb"):
        assert store in done.stdout, f"{store} missing from the demo output"
    assert "every store matches the source" in done.stdout
    assert "replication slot lag" in done.stdout  # the status table
