"""What ``readside status`` says when capture stops: a connector gone (or
its task failed) leaves its replication slot inactive, and PostgreSQL keeps
every byte of WAL for it from then on; the views go stale with no error
anywhere else. Status names the connector's state, the slot's activity and
the WAL it keeps, and warns."""

from __future__ import annotations

import pytest
from harness import wait_for
from shop_model import SCHEMA as SHOP_SCHEMA
from shop_model import TABLES as SHOP_TABLES

from connectors import debezium
from pipeline.status import capture

pytestmark = pytest.mark.integration

FILLER_MB = 4


def test_status_warns_of_an_inactive_slot_and_the_wal_it_keeps(make_pipeline):
    p = make_pipeline(SHOP_SCHEMA, SHOP_TABLES, {"flat": {"table": "public.customers"}})
    p.apply_connector()
    live = capture(p.config)
    assert live["state"] == "RUNNING", live
    assert live["slot"]["active"]
    assert live["slot"]["wal_status"] == "reserved"
    assert live["capture_warnings"] == []

    assert debezium.delete(p.config)  # the connector goes; its slot stays
    wait_for(lambda: not capture(p.config)["slot"]["active"], 60, "the slot to go idle")
    before = capture(p.config)["slot"]["retained_bytes"]
    # WAL that no connector reads: PostgreSQL keeps it all for the slot.
    p.sql(
        "CREATE TABLE filler AS SELECT g, repeat('x', 1000) AS pad "
        f"FROM generate_series(1, {FILLER_MB * 1024}) AS g"
    )
    p.sql("CHECKPOINT")
    idle = capture(p.config)
    assert idle["state"] == "ABSENT"
    assert not idle["slot"]["active"]
    assert idle["slot"]["retained_bytes"] >= before + FILLER_MB * 2**20
    (warning,) = idle["capture_warnings"]
    assert f"replication slot {p.config.source.slot} is inactive" in warning
    assert "MB of WAL" in warning

    out = p.run_cli("status").stdout
    assert f"connector {p.config.connect.connector}: ABSENT" in out
    assert f"replication slot {p.config.source.slot}: inactive" in out
    assert f"warning: replication slot {p.config.source.slot} is inactive" in out
