"""`config check` warns about table views that compaction can leave unable to
complete an update: a TOASTable column under REPLICA IDENTITY DEFAULT (an
unchanged TOASTed value arrives without its value)."""

from __future__ import annotations

import subprocess

import pytest

pytestmark = pytest.mark.integration

SCHEMA = "CREATE TABLE notes (id integer PRIMARY KEY, n integer, body text);"


def _check(p) -> subprocess.CompletedProcess[str]:
    return p.run_cli("config", "check", timeout=120, ok=False)


def test_config_check_warns_toastable_table_without_full_identity(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.notes"], {"notes": {"table": "public.notes"}})
    warned = _check(p)
    assert warned.returncode == 0, warned.stderr
    assert "warning: table public.notes: columns body may be TOASTed" in warned.stderr
    assert "ALTER TABLE public.notes REPLICA IDENTITY FULL" in warned.stderr
    p.sql("ALTER TABLE notes REPLICA IDENTITY FULL")
    quiet = _check(p)
    assert quiet.returncode == 0, quiet.stderr
    assert "TOASTed" not in quiet.stderr
