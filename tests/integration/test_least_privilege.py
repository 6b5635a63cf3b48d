"""The pipeline on least-privilege roles (``readside connector roles``):
Debezium streams as a ``LOGIN REPLICATION`` role that may only read the
captured tables, the workers' aggregate re-reads and TOAST reads run as a
read-only role, the API's watermark reads the slot as a role that may read
no table at all, and ``config check`` names a DSN that logs in as a
superuser."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest
from harness import REPO, capture_refs, redis_admin_client, wait_for
from shop_model import SCHEMA as SHOP_SCHEMA
from shop_model import TABLES as SHOP_TABLES
from shop_model import VIEW as SHOP_VIEW
from shop_model import ShopLoad

from connectors import debezium
from connectors.postgres import prepare_source
from pipeline.roles import role_names
from query.watermark import WatermarkTracker

pytestmark = pytest.mark.integration


def test_pipeline_runs_on_least_privilege_roles(make_pipeline, tmp_path, stack):
    views = {"customers": SHOP_VIEW, "flat": {"table": "public.customers"}}
    p = make_pipeline(SHOP_SCHEMA, SHOP_TABLES, views)
    prefix = f"rs_{p.suffix}"
    names = role_names(prefix)
    prepare_source(p.config)  # the owner's part: publication, heartbeat, signal
    dsns, capture = p.make_roles(prefix)
    try:

        def least(data):
            data["connect"].update(capture_refs(capture))
            data["source"]["lookup_dsn"] = dsns["reader"]
            data.setdefault("api", {})["watermark_dsn"] = dsns["watermark"]

        p.rewrite(least)
        with psycopg.connect(dsns["reader"]) as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("DELETE FROM customers")  # the reader only reads
        load = ShopLoad(seed=5)
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            load.seed(conn)
        p.apply_connector()
        p.start_worker()
        with psycopg.connect(p.dsn, autocommit=True) as conn:
            for _ in range(150):
                load.step(conn, load.rng)
        p.wait_drained(timeout=180)
        p.assert_converged()
        slot_user = p.sql(
            "SELECT r.rolname, r.rolsuper FROM pg_replication_slots sl "
            "JOIN pg_stat_activity a ON a.pid = sl.active_pid "
            "JOIN pg_roles r ON r.rolname = a.usename WHERE sl.slot_name = %s",
            (p.config.source.slot,),
        )
        assert [tuple(r) for r in slot_user] == [(names["capture"], False)]
        # ...and, like every test's pipeline, reaches Kafka only through its
        # SASL listener as the SCRAM user, and Redis as its ACL user
        assert p.config.kafka.bootstrap_servers.endswith(f":{stack.kafka_sasl_port}")
        assert p.config.kafka.client["sasl.mechanism"] == "SCRAM-SHA-256"
        acl_user = p.config.sinks["redis"].username
        assert acl_user not in (None, "default")
        with redis_admin_client() as admin:
            users = {c.get("user") for c in admin.client_list()}
        assert acl_user in users, users  # the running worker's connections
        tracker = WatermarkTracker(p.config)
        try:
            assert tracker._slot_lsn() is not None  # the slot, with LOGIN alone
        finally:
            tracker.close()
        cli = [sys.executable, "-m", "pipeline.cli", "--config", str(p.config_path)]
        check = subprocess.run(
            [*cli, "config", "check"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stderr
        # source.dsn is the owner here (postgres): named; the others are not
        assert "source.dsn logs in as a superuser" in check.stderr
        assert "lookup_dsn logs in as a superuser" not in check.stderr
        assert "watermark_dsn logs in as a superuser" not in check.stderr
    finally:
        for worker in p.workers:
            worker.terminate()
        debezium.delete(p.config)
        wait_for(
            lambda: (
                not p.sql(
                    "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s "
                    "AND active",
                    (p.config.source.slot,),
                )
            ),
            60,
            "the capture role's session to end",
        )
        for role in names.values():
            p.sql(f'DROP OWNED BY "{role}"')
            p.sql(f'DROP ROLE "{role}"')
