"""Changes of megabytes: a row of a long text or a large JSON document.

Kafka's topics and producers take records up to 1 MiB unless told otherwise.
A larger change failed the connector's task ("Unrecoverable exception from
producer send callback"), and with it the capture of every table, while the
workers said nothing. The table topics and the connector's producer now take
``kafka.max_message_bytes`` (16 MiB unless set; ``connector apply`` raises a
topic made before), and a change larger still is said, by ``readside
status`` and the running worker, with the way out: raise the setting and run
``connector apply``, after which the task goes on at that change and nothing
is lost.
"""

from __future__ import annotations

import pytest
from items_model import status_warnings

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE docs (id integer PRIMARY KEY, title text, body text, meta jsonb);
ALTER TABLE docs REPLICA IDENTITY FULL;
CREATE TABLE notes (id integer PRIMARY KEY, n integer);
INSERT INTO docs VALUES (1, 'small', 'short', '{}');
INSERT INTO notes VALUES (1, 1);
"""
VIEWS = {
    "docs": {"table": "public.docs", "sinks": ["redis", "elasticsearch", "mongodb"]},
    "notes": {"table": "public.notes", "sinks": ["redis"]},
}
#: about 2 MB of text (md5 hex digits), not compressible below 1 MiB by TOAST
BIG_BODY = (
    "(SELECT string_agg(md5(i::text || %s), '') FROM generate_series(1, 60000) i)"
)
#: about 2 MB of JSON, in one field (each key of an object becomes a field of
#: Elasticsearch's dynamic mapping, 1,000 at most by default)
BIG_META = (
    "(SELECT jsonb_build_object('tags', jsonb_agg(md5(i::text))) "
    "FROM generate_series(1, 60000) i)"
)


def _start(make_pipeline, **kafka):
    p = make_pipeline(
        SCHEMA, ["public.docs", "public.notes"], VIEWS, worker={"source_check_s": 2.0}
    )
    if kafka:
        p.rewrite(lambda d: d["kafka"].update(kafka))
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained()
    p.assert_converged()
    return p, worker


def test_changes_of_megabytes_reach_every_store(make_pipeline):
    """The harness makes the table topics before the connector, as an older
    readside or an operator did: ``connector apply`` raises their limit."""
    p, _worker = _start(make_pipeline)
    p.sql(f"INSERT INTO docs VALUES (2, 'long', {BIG_BODY}, '{{}}')", ("a",))
    p.sql(f"INSERT INTO docs VALUES (3, 'large json', 'short', {BIG_META})")
    # REPLICA IDENTITY FULL: the update's record holds both 2 MB images
    p.sql(f"UPDATE docs SET body = {BIG_BODY}, title = 'longer' WHERE id = 2", ("b",))
    p.sql("UPDATE docs SET title = 'json again' WHERE id = 3")
    p.sql("INSERT INTO notes VALUES (2, 2)")
    p.wait_drained()
    p.assert_converged()
    assert status_warnings(p, "capture_warnings") == []


def test_a_change_larger_than_the_topics_take_is_said_and_passes_once_raised(
    make_pipeline,
):
    p, worker = _start(make_pipeline, max_message_bytes=1 << 20)
    p.sql(f"INSERT INTO docs VALUES (2, 'long', {BIG_BODY}, '{{}}')", ("a",))
    p.sql("INSERT INTO notes VALUES (2, 2)")  # held back behind it
    said = (
        "connector task 0 failed on a change of {size} bytes, larger than the "
        "table topics take (kafka.max_message_bytes 1048576): no change of any "
        "table reaches the topics"
    )
    p.wait_log(worker, "ERROR pipeline.publication source: connector task 0 failed on")
    warnings = status_warnings(p, "capture_warnings")
    (warning,) = [w for w in warnings if w.startswith("connector task")] or warnings
    size = warning.split("a change of ", 1)[1].split(" ", 1)[0]
    assert int(size) > 1 << 20, warning
    assert warning.startswith(said.format(size=size)), warning
    assert warning.endswith(
        "raise kafka.max_message_bytes (at most 33554432) and run readside "
        "connector apply, which raises the topics' limit and restarts the task "
        "at that change"
    ), warning
    assert any(not d.ok for d in p.verify()), "the stores hold the change already"

    p.rewrite(lambda d: d["kafka"].update(max_message_bytes=4 << 20))
    p.run_cli("connector", "apply")
    p.wait_drained()
    p.assert_converged()
    assert status_warnings(p, "capture_warnings") == []
    p.wait_log(worker, "INFO pipeline.publication source: resolved: connector task 0")
