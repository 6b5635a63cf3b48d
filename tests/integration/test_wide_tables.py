"""A wide table: more columns than Elasticsearch's default field limit.

Elasticsearch and OpenSearch refuse a mapping of more than 1,000 fields
unless the index says otherwise, and a text column maps two (the text and
its keyword sub-field), a numeric two (the number and its exact text). The
index of a view of a table with 500 text columns was refused ("Limit of
total fields [1000] has been exceeded"), and the worker, every view of it,
stopped at its start. An index readside creates now takes its derived
fields with 1,000 to spare for dynamic ones.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

TEXTS, NUMERICS = 420, 120  # 420 * 2 + 120 * 2 fields, and the nested level's
SCHEMA = f"""
CREATE TABLE wide (
    id integer PRIMARY KEY,
    {", ".join(f"t{i} text" for i in range(TEXTS))},
    {", ".join(f"n{i} numeric(10, 2)" for i in range(NUMERICS))}
);
CREATE TABLE parts (id integer PRIMARY KEY, wide_id integer NOT NULL, label text);
ALTER TABLE parts REPLICA IDENTITY FULL;
INSERT INTO wide (id, t0, t419, n0, n119) VALUES (1, 'a', 'z', 1.50, 2.25);
INSERT INTO parts VALUES (1, 1, 'first');
"""


@pytest.mark.parametrize("search", ["elasticsearch", "opensearch"])
def test_a_view_of_a_wide_table_gets_its_index_in_every_search_store(
    make_pipeline, search
):
    views = {
        "wide": {"table": "public.wide", "sinks": [search, "redis"]},
        "wide_parts": {
            "kind": "aggregate",
            "table": "public.wide",
            "sinks": [search, "mongodb"],
            "embed": {"parts": {"children": "public.parts", "on": {"wide_id": "id"}}},
        },
    }
    p = make_pipeline(SCHEMA, ["public.wide", "public.parts"], views)
    p.apply_connector()
    worker = p.start_worker()
    p.sql("INSERT INTO wide (id, t1, n1) VALUES (2, 'b', 3.75)")
    p.sql("UPDATE wide SET t200 = 'middle', n60 = 9.99 WHERE id = 1")
    p.sql("INSERT INTO parts VALUES (2, 2, 'second')")
    p.wait_drained()
    assert worker.alive(), worker.tail()
    p.assert_converged()
