"""Captured tables with row-level security, read by readside's
least-privilege roles (``readside connector roles``), which do not bypass it.

Logical decoding streams every row's changes whatever the policies say,
but every read by SQL runs through them: Debezium's snapshots (as the
capture role), the workers' aggregate re-reads and TOAST and generated
column reads, ``snapshot`` and ``verify`` (as the reader). With a policy
that hides rows from those roles, the initial snapshot left the rows out,
an aggregate re-read found its root "gone" and deleted the document, and
nothing was said. The worker must refuse to start naming the reader role,
the table and the statements that let it read every row (a table view's
worker at its first batch); ``readside status`` must say the same of the
reader and of the capture role; with a policy that lets
both read every row, every document matches the source
(connectors.rowsecurity).
"""

from __future__ import annotations

import pytest
from harness import wait_for
from items_model import status_warnings

from pipeline.roles import role_names

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE accounts (id integer PRIMARY KEY, tenant text NOT NULL, name text);
INSERT INTO accounts SELECT i, CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END,
    'account ' || i FROM generate_series(1, 20) AS i;
ALTER TABLE accounts ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_rows ON accounts
    USING (tenant = current_setting('app.tenant', true));
"""
VIEWS = {
    "accounts": {"table": "public.accounts", "sinks": ["redis"]},
    "account_docs": {
        "kind": "aggregate",
        "table": "public.accounts",
        "sinks": ["redis"],
    },
}


def test_a_policy_hiding_rows_from_readsides_roles_is_refused_and_said(
    make_pipeline,
):
    p = make_pipeline(SCHEMA, ["public.accounts"], VIEWS)
    p.apply_connector()  # on readside's least-privilege roles
    names = role_names(f"rs_{p.suffix}")
    reader, capture = names["reader"], names["capture"]

    refused = (
        f"source.lookup_dsn (source.dsn without it): role {reader} cannot read "
        "every row of public.accounts (row-level security"
    )
    policy = "CREATE POLICY readside_reads ON public.accounts FOR SELECT TO"
    # The aggregate view's worker at its start; the table view's at its first
    # batch, before it reads a row for a TOAST value or a generated column.
    # (The connector's snapshot, as the capture role, saw no row: a change.)
    p.sql("UPDATE accounts SET name = 'seen' WHERE id = 1")
    for views in (["account_docs"], ["accounts"]):
        refusing = p.start_worker(views=views)
        wait_for(refusing.proc.poll, 60, f"the {views} worker to refuse")
        assert refused in refusing.log_text(), refusing.tail()
        assert f"{policy} {reader} USING (true)" in refusing.log_text()
    assert p.run_cli("verify", ok=False).returncode != 0

    said, refused_too = status_warnings(p, "capture_warnings")
    assert said.startswith(
        f"role {capture} (the connector's) cannot read every row of public.accounts"
    ), said
    assert f"{policy} {capture} USING (true)" in said
    assert said.endswith(
        "then readside snapshot account_docs --from-source; "
        "readside snapshot accounts --from-source"
    ), said
    assert refused_too.startswith(refused), refused_too

    p.sql(
        f"CREATE POLICY readside_reads ON accounts FOR SELECT TO {reader}, {capture} "
        "USING (true)"
    )
    assert status_warnings(p, "capture_warnings") == []
    worker = p.start_worker()
    p.run_cli("snapshot", "accounts", "--from-source", timeout=300)
    p.run_cli("snapshot", "account_docs", timeout=300)
    p.sql("UPDATE accounts SET name = 'renamed' WHERE id <= 4")
    p.wait_drained(timeout=120)
    wait_for(lambda: all(d.ok for d in p.verify()), 120, "every document loaded")
    assert worker.alive(), worker.tail()
