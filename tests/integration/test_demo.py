"""``readside demo`` end to end on the local stack (``readside stack up``).

Runs this checkout (``python -m pipeline.cli`` from the repository root), not
whatever ``readside`` is installed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _row(stdout: str, view: str) -> str:
    """The line of ``view`` in the last "documents per store" table."""
    table = stdout.rsplit("documents per store vs the source", 1)[-1]
    rows = [ln for ln in table.splitlines() if re.match(rf"\W*{view}\W", ln)]
    assert rows, f"no row for {view} in the counts table:\n{table[:3000]}"
    return rows[0]


def test_demo_run_matches_every_store_and_exits_zero() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "200"},
    )
    elapsed = time.monotonic() - started
    out = done.stdout
    assert done.returncode == 0, (out + done.stderr)[-4000:]
    for store in ("redis", "elasticsearch", "mongodb"):
        assert store in out, f"{store} missing from the demo output"
    assert "every store matches the source" in out
    assert "replication slot lag" in out  # the status table

    # The aggregate view, compared after the initial snapshot and at the end,
    # in both of its stores (cache and search), with every document equal.
    first = re.search(r"initial snapshot in every store after [\d.]+s: ([\d,]+) ", out)
    assert first, out[-4000:]
    agg = _row(out, "customer_orders")
    # boxed on a terminal, plain columns (two spaces apart) when piped
    cells = [c.strip() for c in re.split(r"[│|]|\s{2,}", agg) if c.strip()]
    assert cells[0] == "customer_orders"
    roots = int(cells[1].replace(",", ""))
    assert roots >= 2000  # the demo's customers, plus new ones
    assert cells[2:4] == [f"{roots:,}", f"{roots:,}"], agg  # redis, elasticsearch
    assert cells[-1] == "yes", agg
    assert re.search(r"customer_orders 7\b.*orders", out)
    assert out.count("the same document, version") == 2  # redis and elasticsearch

    # readside snapshot of the aggregate view under live changes: every root.
    snap = re.search(
        r"snapshot customer_orders done: ([\d,]+) rows in (\d+) chunks, "
        r"[\d.]+s, ([\d,]+) rows/s, method=chunks, sinks=cache,search",
        out,
    )
    assert snap, out[-4000:]
    assert int(snap.group(1).replace(",", "")) >= 2000
    assert int(snap.group(2)) >= 20
    # Then --rebuild: a second generation of it, switched in, the first dropped.
    rebuilt = re.search(
        r"rebuild customer_orders done: generation (\d+) \(was cache=(\d+),"
        r"search=(\d+)\) in cache,search; ([\d,]+) roots loaded, .*; "
        r"old generation dropped",
        out,
    )
    assert rebuilt, out[-4000:]
    generation = int(rebuilt.group(1))
    assert generation == int(rebuilt.group(2)) + 1 == int(rebuilt.group(3)) + 1
    assert int(rebuilt.group(4).replace(",", "")) >= 2000

    # The API and the read-your-writes round trip.
    assert "http://127.0.0.1:8088/status" in out
    assert "http://127.0.0.1:8088/openapi.json" in out
    trip = re.search(
        r"read-your-writes: the API answered in (\d+) ms with the new last_name "
        r"'Hopper \d\d:\d\d:\d\d'",
        out,
    )
    assert trip, out[-3000:]
    assert re.search(r"docs/7\?min_lsn=[0-9A-F]+/[0-9A-F]+ -> 200 from \w+", out)
    assert "readside serve stopped\n" in out
    # Its duration is reported, not asserted (speed belongs to bench/).
    print(f"readside demo took {elapsed:.0f}s")
