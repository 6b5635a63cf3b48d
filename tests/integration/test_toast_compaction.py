"""An unchanged TOAST value after compaction comes from the source row.

With REPLICA IDENTITY DEFAULT an update that leaves a TOASTed column alone
carries a placeholder instead of its value. While no worker ran, a row's
``bio`` was replaced, then its ``name`` changed; compaction then removed the
record that carried the new ``bio`` and kept the later one with the
placeholder. The stores still hold the old ``bio``: filled from them, the
document stays stale for good. The worker, and a ``snapshot`` replay of the
topic, must read the value from the source; every store must equal it.
"""

from __future__ import annotations

import pytest
from test_tombstones import _drain_connector, compact_until

from pipeline.events import UNCHANGED, ChangeEvent

pytestmark = pytest.mark.integration

#: 3,200 characters of hex from md5: PostgreSQL cannot compress them below
#: the TOAST threshold, so ``bio`` is stored out of line.
BIG = (
    "(SELECT string_agg(md5(random()::text || g::text), '') "
    "FROM generate_series(1, 100) g)"
)
SCHEMA = f"""
CREATE TABLE profiles (id integer PRIMARY KEY, name text NOT NULL, bio text);
INSERT INTO profiles SELECT i, 'name ' || i, {BIG} FROM generate_series(1, 40) i;
"""
VIEWS = {"profiles": {"table": "public.profiles"}}
CHANGED = list(range(1, 41, 4))  # bio replaced, then name changed
OTHERS = [i for i in range(1, 41) if i not in CHANGED]


@pytest.mark.parametrize("reader", ["worker", "replay"])
def test_unchanged_toast_value_after_compaction_is_read_from_the_source(
    make_pipeline, reader
):
    p = make_pipeline(SCHEMA, ["public.profiles"], VIEWS)
    topic = p.config.source.topic("public.profiles")
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=180)
    p.assert_converged()
    assert worker.terminate() == 0, worker.tail()

    for ident in CHANGED:
        p.sql(f"UPDATE profiles SET bio = {BIG} WHERE id = %s", (ident,))
        p.sql("UPDATE profiles SET name = name || ' (renamed)' WHERE id = %s", (ident,))
    _drain_connector(p)

    def roll() -> None:
        p.sql("UPDATE profiles SET name = name || '.' WHERE id = ANY(%s)", (OTHERS,))

    def only_placeholders(events: list[ChangeEvent]) -> bool:
        """Each changed row has records left, none with its new ``bio``."""
        left: dict[int, list[object]] = {}
        for ev in events:
            if ev.after is not None:
                left.setdefault(ev.key["id"], []).append(ev.after.get("bio"))
        return all(
            left.get(i) and all(b is UNCHANGED for b in left[i]) for i in CHANGED
        )

    compact_until(p, topic, roll, only_placeholders, "the new bio compacted away")
    _drain_connector(p)

    if reader == "worker":
        p.start_worker()
        p.wait_drained(timeout=180)
    else:  # a `snapshot` of a table view replays its compacted topic
        p.run_cli("snapshot", "profiles")
    p.assert_converged()
