"""Long values in the fields Elasticsearch maps ``flattened``.

An hstore column, and a json column with ``json: flattened``, are one
``flattened`` field each: every leaf value is indexed as a keyword, and
Lucene refuses a term over 32,766 bytes. A row with one value longer than
that (a note, a pasted document, an encoded blob) was refused by
Elasticsearch whole ("immense term"): a dead letter, and the row's document
missing from the index while every other store held it. Such a leaf is now
kept in ``_source`` and left out of the index (``ignore_above``), as the
keyword sub-fields of text columns are.
"""

from __future__ import annotations

import elasticsearch
import pytest

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE TABLE notes (
    id    integer PRIMARY KEY,
    attrs hstore,
    meta  jsonb,
    body  text
);
INSERT INTO notes VALUES (1, 'kind => short', '{"kind": "short"}', 'short');
"""
VIEWS = {
    "notes": {
        "table": "public.notes",
        "sinks": ["elasticsearch", "redis"],
        "sink_options": {"elasticsearch": {"json": "flattened"}},
    }
}
#: 40,000 characters: over Lucene's 32,766-byte term, in one or four bytes each
LONG = ("repeat('x', 40000)", "repeat('é', 9000)", "repeat('😀', 8192)")


def test_long_values_in_flattened_fields_reach_elasticsearch(make_pipeline):
    p = make_pipeline(SCHEMA, ["public.notes"], VIEWS)
    p.apply_connector()
    p.start_worker()
    for n, long in enumerate(LONG, start=2):
        p.sql(
            f"INSERT INTO notes VALUES ({n}, hstore('kind', 'long') || "
            f"hstore('text', {long}), jsonb_build_object('kind', 'long', 'text', "
            f"{long}), {long})"
        )
    p.sql("UPDATE notes SET attrs = attrs || hstore('more', repeat('y', 50000))")
    p.wait_drained()
    p.assert_converged()
    assert p.dead_letters() == []
    # the short leaves of the same fields are still searchable
    es = elasticsearch.Elasticsearch("http://127.0.0.1:19200")
    alias = f"it-{p.suffix}-notes"
    es.indices.refresh(index=alias)
    for field in ("attrs.kind", "meta.kind"):
        hits = es.search(index=alias, query={"term": {field: "long"}})["hits"]
        assert hits["total"]["value"] == 3, (field, hits)
    es.close()
