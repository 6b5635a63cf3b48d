"""The keys and names of a rebuild's advisory locks (pipeline.snapshot.runlock);
the locks themselves are tried on PostgreSQL by
``tests/integration/test_rebuild.py``."""

from __future__ import annotations

import os

from pipeline.snapshot.runlock import LOCK_CLASS, holder_name, lock_id


def test_each_view_and_sink_has_its_own_lock_within_int4() -> None:
    ids = {
        lock_id(view, sink)
        for view in ("customers", "orders", "customer_docs")
        for sink in ("redis", "elasticsearch", "mongodb")
    }
    assert len(ids) == 9
    assert all(-(2**31) <= i < 2**31 for i in ids)
    assert 0 < LOCK_CLASS < 2**31
    assert lock_id("a", "bc") != lock_id("ab", "c")  # the parts are kept apart
    assert lock_id("customers", "redis") == lock_id("customers", "redis")


def test_a_holder_names_its_view_process_and_host_within_postgres_limit() -> None:
    name = holder_name("customers")
    assert name.startswith(f"readside rebuild customers pid {os.getpid()} on ")
    assert len(holder_name("v" * 100)) == 63  # application_name keeps 63 bytes
