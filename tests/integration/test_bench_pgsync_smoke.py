"""``python -m bench pgsync --quick``: both rates positive, every root in both
indices, the sample read back from both, both tools streaming.

The first run on a machine installs pgsync into its own virtualenv (pip), so
the timeout leaves room for that; with the virtualenv there the run takes
well under 90 s.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from harness import run_bench

pytestmark = pytest.mark.integration


def test_bench_pgsync_quick_mode_loads_every_root_with_both_tools(
    tmp_path: Path,
) -> None:
    # The first run on a machine installs pgsync first: a longer timeout.
    results, done = run_bench(
        tmp_path / "pgsync.json", "pgsync", "--quick", timeout_s=900
    )
    roots = results["roots"]
    readside, pgsync = results["readside"], results["pgsync"]
    assert readside["state"] == "done"
    assert readside["rows"] == roots
    assert readside["docs_held"] == {"elasticsearch": roots}
    assert readside["roots_per_s"] > 0
    # Every document pgsync wrote is there: one per root, no other.
    assert pgsync["docs_held"] == roots
    assert pgsync["missing_roots"] == 0
    assert pgsync["extra_docs"] == 0
    assert pgsync["roots_per_s"] > 0
    assert results["ratio"] > 0
    docs = results["documents"]
    assert docs["readside_found"] == docs["pgsync_found"] == docs["sample"] > 0
    # pgsync adds its bookkeeping field; readside does not.
    assert any(d["field"] == "_meta" for d in docs["differences"])
    streaming = results["streaming"]
    for tool in ("readside", "pgsync"):
        assert streaming[tool]["complete"], streaming
        assert streaming[tool]["changes_per_s"] > 0
    assert "## readside vs pgsync" in done.stdout
