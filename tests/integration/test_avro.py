"""``kafka.format: avro`` on the real stack: Debezium writes through Apicurio
Registry's AvroConverter, the worker reads with the reader compiled from
each writer schema (pipeline.source.avro_reader).

* type parity: the same rows of every mapped type, captured once as JSON and
  once as Avro, give byte-identical documents in every sink, and the Avro
  table view equals the aggregate view (psycopg) and verify's oracle;
* convergence: the randomized workload of ``test_worker_convergence`` (every
  type, TOAST, composite keys, transforms, focus) and the shop aggregate view
  of ``shop_model`` converge in Avro as they do in JSON;
* the other commands that decode records: a dead letter keeps its Avro bytes
  and ``dlq replay`` decodes them, ``snapshot`` of a table view replays the
  Avro topic;
* schema evolution while the worker runs: a column added, dropped, widened;
* a registry outage is waited out, and never holds the commit of a batch
  whose schemas the worker has: the read ahead leaves a record of a schema
  not fetched yet to its own batch.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg
import pytest
from confluent_kafka import Consumer, TopicPartition
from harness import Pipeline, stack_config, wait_for
from psycopg.types import TypeInfo
from psycopg.types.hstore import register_hstore
from shop_model import SCHEMA as SHOP_SCHEMA
from shop_model import TABLES as SHOP_TABLES
from shop_model import VIEW as SHOP_VIEW
from shop_model import ShopLoad, expected_documents
from test_aggregate_races import (
    PARITY_SCHEMA,
    PARITY_VIEWS,
    open_sinks,
    stored_bodies,
    typed_values,
)
from test_dlq import POISON
from test_dlq import SCHEMA as DLQ_SCHEMA
from test_dlq import VIEWS as DLQ_VIEWS
from test_read_ahead import Held
from test_worker_convergence import SCHEMA, TABLES, VIEWS, Workload

from connectors import debezium
from connectors.debezium import ConnectClient, failed_on_registry
from pipeline import dlq
from pipeline.replay import replay_dead_letters
from pipeline.source.avro_converter import schema_id
from pipeline.source.registry import CCOMPAT_PATH, RETRY_FOR_S, SchemaRegistry
from pipeline.sourceconfig import KafkaConfig
from pipeline.stack import runner
from pipeline.worker import build_sinks

pytestmark = pytest.mark.integration

PARITY_TABLES = ["public.boxes", "public.typed"]


def _as_worker(url: str, kafka: KafkaConfig) -> urllib.request.Request:
    """A GET of the registry with the worker's login."""
    password = kafka.schema_registry_password
    assert kafka.schema_registry_username
    assert password
    login = f"{kafka.schema_registry_username}:{password.get_secret_value()}"
    auth = "Basic " + base64.b64encode(login.encode()).decode()
    return urllib.request.Request(url, headers={"Authorization": auth})


def as_avro(p: Pipeline) -> Pipeline:
    """Switch a pipeline (before its connector) to ``kafka.format: avro``."""
    p.rewrite(lambda data: data["kafka"].update(format="avro"))
    assert p.config.kafka.format == "avro"
    return p


def _typed_rows(p: Pipeline, seed: int) -> None:
    """Rows of every type: some before the connector (snapshot), more and
    updates after it (streamed); the same rows for the same seed."""
    rng = random.Random(seed)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        register_hstore(TypeInfo.fetch(conn, "hstore"), conn)
        conn.execute("INSERT INTO boxes VALUES (1, 'one'), (2, 'two')")

        def write(sql: str, ident: int, values: dict[str, Any]) -> None:
            conn.execute(sql, [*values.values(), ident])

        def insert(ident: int, values: dict[str, Any]) -> None:
            cols = ", ".join([*values, "box_id", "id"])
            marks = ", ".join(["%s"] * (len(values) + 1))
            sql = f"INSERT INTO typed ({cols}) VALUES ({marks}, %s)"
            write(sql, ident, {**values, "box_id": 1 + ident % 2})

        insert(1, {})
        for ident in range(2, 12):
            insert(ident, typed_values(rng))
        p.apply_connector()
        p.start_worker()
        for ident in range(12, 30):
            insert(ident, typed_values(rng))
        for ident in range(2, 8):
            vals = typed_values(rng)
            sets = ", ".join(f"{c} = %s" for c in vals)
            write(f"UPDATE typed SET {sets} WHERE id = %s", ident, vals)
    p.wait_drained(timeout=120)
    assert not p.dead_letters()


def _peek(p: Pipeline) -> Consumer:
    """A consumer that reads the topics without committing (assign it)."""
    return Consumer(
        {
            **p.config.kafka.client_conf(),
            "group.id": f"{p.config.kafka.group_id}.peek",
            "enable.auto.commit": False,
        }
    )


def _first_value(p: Pipeline, topic: str) -> bytes:
    consumer = _peek(p)
    try:
        consumer.assign([TopicPartition(topic, n, 0) for n in range(3)])
        found: list[bytes] = []

        def got() -> bool:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None and msg.value():
                found.append(msg.value())
            return bool(found)

        wait_for(got, timeout=30, what=f"a record on {topic}")
        return found[0]
    finally:
        consumer.close()


def test_avro_type_parity_same_rows_as_json_and_as_the_sql(make_pipeline):
    plain = make_pipeline(PARITY_SCHEMA, PARITY_TABLES, PARITY_VIEWS)
    avro = as_avro(make_pipeline(PARITY_SCHEMA, PARITY_TABLES, PARITY_VIEWS))
    for p in (plain, avro):
        _typed_rows(p, seed=4242)
    # The records really are Avro, framed as Confluent's, with registry ids.
    raw = _first_value(avro, avro.config.source.topic("public.typed"))
    registry = SchemaRegistry.of(avro.config.kafka)
    assert registry.schema(schema_id(raw, "value"))["type"] == "record"
    json_sinks, avro_sinks = open_sinks(plain), open_sinks(avro)
    try:
        for name, sink in avro_sinks.items():
            want = stored_bodies(json_sinks[name], "typed_table")
            table = stored_bodies(sink, "typed_table")
            assert len(table) == 29, name
            assert table == want, name
            assert stored_bodies(sink, "typed_root") == table, name
    finally:
        for sink in [*json_sinks.values(), *avro_sinks.values()]:
            sink.close()
    drifts = avro.verify()
    assert len(drifts) == 9
    bad = [d for d in drifts if not d.ok]
    assert not bad, "drift:\n" + "\n".join(d.describe() for d in bad)


def test_avro_randomized_workload_converges_in_every_sink(make_pipeline):
    p = as_avro(make_pipeline(SCHEMA, TABLES, VIEWS))
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load = Workload(conn, seed=20_240_612)
        for _ in range(100):
            load.transaction()
        p.apply_connector()
        p.start_worker()
        p.start_worker()
        for _ in range(600):
            load.transaction()
        for ident in sorted(load.docs):  # unchanged TOASTed bodies to fill
            conn.execute(
                "UPDATE docs SET revision = revision + 1 WHERE id = %s", (ident,)
            )
    p.wait_drained(timeout=180)
    drifts = p.verify()
    assert len(drifts) == 3 * len(VIEWS)
    assert sum(d.expected for d in drifts if d.view == "items") > 0
    assert not p.dead_letters(), "no record may be dead-lettered"
    bad = [d for d in drifts if not d.ok]
    assert not bad, "drift:\n" + "\n".join(d.describe() for d in bad)


def test_avro_shop_aggregate_view_converges(make_pipeline):
    p = as_avro(make_pipeline(SHOP_SCHEMA, SHOP_TABLES, {"customers": SHOP_VIEW}))
    load = ShopLoad(seed=11)
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        load.seed(conn)
    p.apply_connector()
    p.start_worker()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for _ in range(300):
            load.step(conn, load.rng)
    p.wait_drained(timeout=180)
    assert len(expected_documents(p.dsn)) > 10
    p.assert_converged()
    assert not p.dead_letters()


EVOLVING = """
CREATE TABLE evo (id integer PRIMARY KEY, name text, qty integer NOT NULL);
"""


def test_avro_schema_evolves_mid_stream_add_drop_widen(make_pipeline):
    p = as_avro(
        make_pipeline(EVOLVING, ["public.evo"], {"evo": {"table": "public.evo"}})
    )
    topic = p.config.source.topic("public.evo")
    changes = [
        "ALTER TABLE evo ADD COLUMN note text DEFAULT 'new'",
        "ALTER TABLE evo DROP COLUMN name",
        "ALTER TABLE evo ALTER COLUMN qty TYPE bigint",
    ]
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for ident in range(1, 21):
            conn.execute(
                "INSERT INTO evo VALUES (%s, %s, %s)", (ident, f"n{ident}", ident)
            )
        p.apply_connector()
        p.start_worker()
        for step, ddl in enumerate(changes, start=1):
            conn.execute(ddl)  # while the worker runs; then every row changes
            conn.execute(
                "UPDATE evo SET qty = qty + %s", (step * 2**31 if step == 3 else 1,)
            )
            conn.execute(
                "INSERT INTO evo (id, qty) VALUES (%s, %s)", (100 + step, step)
            )
    p.wait_drained(timeout=120)
    assert not p.dead_letters()
    p.assert_converged()
    # Each change gave the topic's value a new writer schema in the registry.
    base = p.config.kafka.schema_registry_url.rstrip("/") + CCOMPAT_PATH
    url = f"{base}/subjects/{topic}-value/versions"
    with urllib.request.urlopen(_as_worker(url, p.config.kafka)) as resp:
        versions = json.loads(resp.read())
    assert len(versions) >= 1 + len(changes)


def test_avro_dead_letter_replayed_and_table_view_snapshot_replays_topic(
    make_pipeline,
):
    p = as_avro(make_pipeline(DLQ_SCHEMA, ["public.products"], DLQ_VIEWS))
    env = {"PYTHONPATH": str(Path(__file__).resolve().parent)}
    p.apply_connector()
    worker = p.start_worker(env=env)
    rows = [(i, POISON if i == 7 else f"p{i}", str(i)) for i in range(1, 21)]
    with p.connect() as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO products VALUES (%s, %s, %s)", rows)
    p.wait_drained()
    (dead,) = p.dead_letters()
    assert dead.headers[dlq.H_REASON] == "transform"
    assert worker.terminate() == 0

    def fix(data: dict[str, Any]) -> None:
        data["views"]["products"]["transforms"][0]["path"] = "test_dlq:tolerant"

    p.rewrite(fix)
    assert replay_dead_letters(p.config) == (1, 0)
    p.assert_converged()
    # A table view's snapshot replays its topic, in Avro too.
    # A table view's snapshot replays its topic through the Avro converter:
    # every record decodes (JSON decoding would dead-letter all 20).
    done = p.run_cli("snapshot", "products", env=env)
    assert "snapshot products done: 20 rows" in done.stdout
    assert "method=replay" in done.stdout
    assert len(p.dead_letters()) == 1
    p.assert_converged()


@pytest.mark.exclusive  # stops the stack's registry
def test_avro_worker_waits_out_a_registry_outage(make_pipeline):
    """A worker that meets a writer schema it has not fetched while the
    registry is down waits, commits nothing past it, and goes on when the
    registry is back: no record is dead-lettered for the outage."""
    p = as_avro(
        make_pipeline(EVOLVING, ["public.evo"], {"evo": {"table": "public.evo"}})
    )
    stack = stack_config()
    with psycopg.connect(p.dsn, autocommit=True) as conn:
        for ident in range(1, 21):
            conn.execute("INSERT INTO evo VALUES (%s, %s, %s)", (ident, "a", ident))
        p.apply_connector()
        worker = p.start_worker()
        p.wait_drained(timeout=120)
        assert worker.terminate() == 0, worker.tail()
        frozen = p.committed()
        conn.execute("UPDATE evo SET qty = qty + 1")

    def written() -> int:
        return sum(v for k, v in p.high_watermarks().items() if k in frozen)

    wait_for(
        lambda: written() >= sum(frozen.values()) + 20,
        60,
        "the connector to write the updates",
    )
    runner.stop_service(stack, "registry")
    try:
        # A new worker has fetched no schema yet: every record waits.
        worker = p.start_worker()
        wait_for(
            lambda: "decoding failed" in worker.log_text() or not worker.alive(),
            90,
            "the worker to meet the outage",
        )
        time.sleep(RETRY_FOR_S + 5)  # longer than one fetch's own retries
        assert worker.alive(), worker.tail()
        assert p.committed() == frozen
    finally:
        runner.start_service(stack, "registry")
    p.wait_drained(timeout=120)
    assert worker.alive(), worker.tail()
    assert not p.dead_letters()
    p.assert_converged()


def _records_by_value_schema(
    p: Pipeline, topic: str
) -> dict[int, list[tuple[int, int]]]:
    """Per writer schema id of the value, the (partition, offset) of each
    record of ``topic`` written so far (tombstones left out)."""
    consumer = _peek(p)
    ends = {part: end for (t, part), end in p.high_watermarks().items() if t == topic}
    try:
        consumer.assign([TopicPartition(topic, n, 0) for n in ends])
        found: dict[int, list[tuple[int, int]]] = {}
        seen = dict.fromkeys(ends, 0)

        def read() -> bool:
            msg = consumer.poll(1.0)
            if msg is not None and msg.error() is None:
                seen[msg.partition()] = msg.offset() + 1
                if msg.value():
                    found.setdefault(schema_id(msg.value(), "value"), []).append(
                        (msg.partition(), msg.offset())
                    )
            return all(seen[n] >= end for n, end in ends.items())

        wait_for(read, timeout=60, what=f"every record of {topic}")
        return found
    finally:
        consumer.close()


class _FirstAsk(logging.Handler):
    """On the worker's first failed ask of the registry for one schema id,
    what the pipeline had committed at that moment."""

    def __init__(self, p: Pipeline, schema: int) -> None:
        super().__init__(logging.WARNING)
        self.p = p
        self.url_end = f"/schemas/ids/{schema}"
        self.committed: dict[tuple[str, int], int] | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.committed is None and self.url_end in record.getMessage():
            self.committed = self.p.committed()


@pytest.mark.exclusive  # stops the stack's registry
def test_avro_registry_outage_never_holds_the_commit_of_the_batch_before(
    make_pipeline,
):
    """The batch in hand commits before the worker asks a registry that is
    down for the schema of the next record: reading ahead while the batch is
    written leaves that record to its own batch (which waits the outage out),
    so the commit, and what ``min_lsn`` reads from it, is never held on its
    behalf."""
    p = as_avro(
        make_pipeline(
            EVOLVING,
            ["public.evo"],
            {"evo": {"table": "public.evo"}},
            worker={"batch_size": 1},
        )
    )
    topic = p.config.source.topic("public.evo")
    stack = stack_config()
    p.sql("INSERT INTO evo VALUES (1, 'a', 1)")
    p.apply_connector()
    redis = Held(build_sinks(p.config, ["redis"])["redis"])
    p.start_in_process({"redis": redis})
    p.wait_drained(timeout=120)
    known = set(_records_by_value_schema(p, topic))
    # The next write waits: the records after it are fetched meanwhile.
    redis.entered.clear()
    redis.hold.set()
    p.sql("UPDATE evo SET qty = 2")
    wait_for(redis.entered.is_set, 60, "a batch in the held write")
    p.sql("UPDATE evo SET qty = 3")  # the last record of a known schema
    p.sql("ALTER TABLE evo ADD COLUMN note text DEFAULT 'new'")
    p.sql("UPDATE evo SET qty = 4")  # the first of a schema not fetched yet

    def written() -> dict[int, list[tuple[int, int]]]:
        return _records_by_value_schema(p, topic)

    wait_for(lambda: set(written()) - known, 60, "a record of the new schema")
    by_schema = written()
    (new,) = set(by_schema) - known
    ((part, first_new),) = by_schema[new]
    ask = _FirstAsk(p, new)
    p.committed()  # its offsets reader is made here, not on the worker's thread
    registry_log = logging.getLogger("pipeline.source.registry")
    registry_log.addHandler(ask)
    runner.stop_service(stack, "registry")
    try:
        redis.hold.clear()
        wait_for(lambda: ask.committed is not None, 90, "the worker to ask")
        assert ask.committed is not None
        # Every record before the new schema's first was committed first.
        assert ask.committed[(topic, part)] == first_new
    finally:
        registry_log.removeHandler(ask)
        runner.start_service(stack, "registry")
    p.wait_drained(timeout=120)
    assert not p.dead_letters()
    p.assert_converged()


@pytest.mark.exclusive  # stops the stack's registry
def test_avro_table_altered_while_the_registry_is_down_converges_once_it_is_back(
    make_pipeline,
):
    """A table altered while the registry is down: the connector cannot
    register the new schema, and its task fails. Once the registry answers
    again, the pipeline goes on by itself, with no command, and every
    document equals its row."""
    p = as_avro(
        make_pipeline(EVOLVING, ["public.evo"], {"evo": {"table": "public.evo"}})
    )
    stack = stack_config()
    p.sql("INSERT INTO evo SELECT g, 'n' || g, g FROM generate_series(1, 20) g")
    p.apply_connector()
    worker = p.start_worker()
    p.wait_drained(timeout=120)
    connect = ConnectClient.of(p.config.connect)
    path = f"/connectors/{p.config.connect.connector}/status"
    runner.stop_service(stack, "registry")
    try:
        p.sql("ALTER TABLE evo ADD COLUMN note text DEFAULT 'new'")
        p.sql("UPDATE evo SET qty = qty + 1, note = 'during' WHERE id <= 10")
        wait_for(
            lambda: failed_on_registry(connect.request("GET", path) or {}),
            90,
            "the connector's task to fail on the registry",
        )
        p.wait_log(worker, "does not answer; restarted once it does")
        tasks = debezium.status(p.config)["tasks"]  # as readside status shows it
        assert [t["on_registry"] for t in tasks] == [True], tasks
    finally:
        runner.start_service(stack, "registry")
    p.sql("UPDATE evo SET qty = qty + 1 WHERE id > 10")
    p.wait_drained(timeout=180)
    assert "answers again: restarted" in worker.log_text()
    assert worker.alive(), worker.tail()
    assert not p.dead_letters()
    p.assert_converged()
