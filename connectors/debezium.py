"""The Debezium PostgreSQL connector, configured from the readside config.

``readside connector apply`` builds the connector's settings from the config
(:func:`connector_config`), creates the two helper tables it relies on (the
signal table for incremental snapshots and the heartbeat table that keeps an
idle database's slot moving), creates or updates the publication and
registers or updates the connector over the Kafka Connect REST API. The
decoder (``pipeline.source``) relies on the type handling chosen here.

The publication is readside's, not Debezium's (``publication.autocreate.mode``
is ``disabled``): it lists exactly the captured tables and is created
``WITH (publish_via_partition_root = true)``, so that pgoutput publishes a
change of any leaf partition of a partitioned table as a change of its root.
The root's name is the only one in ``table.include.list``, so its topic and
key are those of every row, whichever partition holds the row. Debezium's own
``filtered`` mode cannot be relied on for that: it creates the publication
with the option but, for a publication that exists already, only replaces
the table list (``ALTER PUBLICATION ... SET TABLE``) and never sets it.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from connectors import truncate
from pipeline.config import Config
from pipeline.errors import ConfigError, FatalError, TransientError
from pipeline.source.converter import record_format

logger = logging.getLogger(__name__)

CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"


def heartbeat_sql(table: str) -> str:
    return (
        f"INSERT INTO {table} (id, ts) VALUES (1, now()) "
        "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts"
    )


def captured_tables(cfg: Config) -> list[str]:
    """The tables the connector captures: the config's, heartbeat and signal."""
    src = cfg.source
    return list(dict.fromkeys([*src.tables, src.heartbeat_table, src.signal_table]))


def connector_config(cfg: Config) -> dict[str, str]:
    """The connector settings as the Connect REST API takes them."""
    src = cfg.source
    conn = conninfo_to_dict(src.dsn.get_secret_value())
    tables = captured_tables(cfg)
    settings: dict[str, Any] = {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": 1,
        "plugin.name": "pgoutput",
        "database.hostname": conn.get("host", "127.0.0.1"),
        "database.port": conn.get("port", 5432),
        "database.user": conn.get("user", "postgres"),
        "database.password": conn.get("password", ""),
        "database.dbname": conn.get("dbname", "postgres"),
        "topic.prefix": src.topic_prefix,
        "slot.name": src.slot,
        "publication.name": src.publication,
        # readside creates and updates the publication (ensure_publication);
        # the option below is read only by the other modes, kept in step.
        "publication.autocreate.mode": "disabled",
        "publish.via.partition.root": "true",
        "table.include.list": ",".join(tables),
        "snapshot.mode": src.snapshot_mode,
        # Heartbeats keep time lag fresh and let an idle database release WAL.
        "heartbeat.interval.ms": src.heartbeat_ms,
        "heartbeat.action.query": heartbeat_sql(src.heartbeat_table),
        # Incremental snapshots (readside snapshot on a table view).
        "signal.enabled.channels": "source",
        "signal.data.collection": src.signal_table,
        "incremental.snapshot.chunk.size": 2048,
        # Deletes are followed by a tombstone so compaction can drop the key.
        "tombstones.on.delete": "true",
        # Truncates stay skipped (Debezium's default, spelled out): a truncate
        # event has no key, and the broker refuses keyless records in the
        # compacted table topics ("Compacted topic cannot accept message
        # without key"), which fails the task. A trigger turns a TRUNCATE
        # into row deletes instead (connectors/truncate.py).
        "skipped.operations": "t",
        # Type handling the decoder relies on (docs/types.md).
        "decimal.handling.mode": "string",
        "time.precision.mode": "adaptive_time_microseconds",
        "interval.handling.mode": "string",
        "binary.handling.mode": "base64",
        "hstore.handling.mode": "json",
        "include.unknown.datatypes": "true",
        # Column type names in the schema let the decoder normalise numerics
        # (Java prints 1E-8 and NAN where PostgreSQL prints 0.00000001, NaN).
        "column.propagate.source.type": ".*",
        "provide.transaction.metadata": "false",
        # JsonConverter or Apicurio's AvroConverter (kafka.format).
        **record_format(cfg.kafka),
        # Topics: one per table, compacted, partitioned by primary key.
        "topic.creation.default.replication.factor": cfg.kafka.replication_factor,
        "topic.creation.default.partitions": cfg.kafka.partitions,
        "topic.creation.default.cleanup.policy": "compact",
        # A delete record is kept as long as its tombstone (kafka.delete_window_ms):
        # within that window a worker behind sees both, so the former owner of
        # an aggregate child (in the record's before image) is still known.
        "topic.creation.default.min.compaction.lag.ms": cfg.kafka.delete_window_ms,
        "topic.creation.default.delete.retention.ms": cfg.kafka.delete_window_ms,
        "max.batch.size": 4096,
        "max.queue.size": 16384,
        "poll.interval.ms": 100,
    }
    return {k: str(v) for k, v in settings.items()}


#: The topmost partitioned table of a partition, or NULL for any other table.
_ROOT = """
SELECT n.nspname || '.' || r.relname
FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace
WHERE r.oid = pg_partition_root(to_regclass(%(t)s)) AND r.oid <> to_regclass(%(t)s)
"""

_MEMBERS = """
SELECT n.nspname || '.' || c.relname
FROM pg_publication_rel pr
JOIN pg_class c ON c.oid = pr.prrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE pr.prpubid = %s
"""


def _table(name: str) -> sql.Composable:
    schema, _, table = name.partition(".")
    return sql.Identifier(schema, table)


def table_problems(conn: psycopg.Connection[Any], tables: list[str]) -> list[str]:
    """What is wrong with ``source.tables`` against the source's catalog.

    A table must exist, and a partition must not be listed: its changes are
    published under its root's name (``publish_via_partition_root``), so the
    view would never see them; the partitioned root is the table to list.
    """
    problems: list[str] = []
    for table in tables:
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if found is None or found[0] is None:
            problems.append(f"source.tables: table {table} does not exist")
            continue
        root = conn.execute(_ROOT, {"t": table}).fetchone()
        if root is not None:
            problems.append(
                f"source.tables: {table} is a partition of {root[0]}; list the "
                f"partitioned table {root[0]} instead (changes of every partition "
                "are published under the root's name, key and topic)"
            )
    return problems


#: Columns PostgreSQL may store out of line (TOAST), per table, for tables
#: whose replica identity is not FULL.
_TOASTABLE = """
SELECT a.attname
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.oid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attstorage IN ('x', 'e') AND c.relreplident <> 'f'
ORDER BY a.attnum
"""


def toast_risks(conn: psycopg.Connection[Any], cfg: Config) -> list[str]:
    """Warnings for table views whose table can send unchanged TOASTed values.

    An update that leaves a TOASTed column unchanged carries no value for it
    (REPLICA IDENTITY DEFAULT); the worker reads it from the source row
    (:mod:`pipeline.toast`), one query per batch that holds such updates,
    and on a replica (``source.lookup_dsn``) after waiting for the change to
    be visible there. REPLICA IDENTITY FULL puts the value in every update
    and spares those reads.
    """
    tables = {v.table for v in cfg.views.values() if v.kind == "table"}
    out: list[str] = []
    for table in sorted(t for t in tables if t):
        cols = [r[0] for r in conn.execute(_TOASTABLE, (table,)).fetchall()]
        if cols:
            out.append(
                f"table {table}: columns {', '.join(cols)} may be TOASTed and its "
                "replica identity is not FULL; the workers read the value of "
                "each update that leaves them unchanged from the source row "
                f"(to spare those reads: ALTER TABLE {table} REPLICA IDENTITY FULL)"
            )
    return out


def ensure_publication(
    conn: psycopg.Connection[Any], name: str, tables: list[str]
) -> str:
    """Make publication ``name`` publish exactly ``tables``, through roots.

    Idempotent; returns ``created``, ``updated`` or ``unchanged``. Runs
    before the connector (re)starts, so that the stream it reads from then
    on carries every change of a partition under the root's name.

    Raises:
        FatalError: the publication is ``FOR ALL TABLES`` (readside keeps its
            table list; drop it or name another ``source.publication``).
    """
    pub = sql.Identifier(name)
    members = sql.SQL(", ").join(_table(t) for t in tables)
    with conn.transaction():
        row = conn.execute(
            "SELECT oid, puballtables, pubviaroot FROM pg_publication "
            "WHERE pubname = %s",
            (name,),
        ).fetchone()
        if row is None:
            conn.execute(
                sql.SQL(
                    "CREATE PUBLICATION {} FOR TABLE {} "
                    "WITH (publish_via_partition_root = true)"
                ).format(pub, members)
            )
            return "created"
        oid, all_tables, via_root = row
        if all_tables:
            raise FatalError(
                f"publication {name} is FOR ALL TABLES; readside keeps the "
                "publication's table list: drop it (DROP PUBLICATION "
                f"{name}) or set another source.publication"
            )
        have = {str(r[0]) for r in conn.execute(_MEMBERS, (oid,)).fetchall()}
        if via_root and have == set(tables):
            return "unchanged"
        if not via_root:
            conn.execute(
                sql.SQL(
                    "ALTER PUBLICATION {} SET (publish_via_partition_root = true)"
                ).format(pub)
            )
        if have != set(tables):
            conn.execute(
                sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(pub, members)
            )
    return "updated"


def prepare_source(cfg: Config) -> None:
    """Create the signal and heartbeat tables, the publication and the
    truncate triggers (idempotent; :mod:`connectors.truncate`).

    Raises:
        ConfigError: a table of ``source.tables`` is missing or a partition.
    """
    src = cfg.source
    with psycopg.connect(src.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {src.signal_table} ("
            "id varchar(64) PRIMARY KEY, type varchar(32) NOT NULL, "
            "data varchar(4096))"
        )
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {src.heartbeat_table} ("
            "id int PRIMARY KEY, ts timestamptz NOT NULL)"
        )
        conn.execute(heartbeat_sql(src.heartbeat_table))
        problems = table_problems(conn, list(src.tables))
        if problems:
            raise ConfigError("\n".join(problems))
        done = ensure_publication(conn, src.publication, captured_tables(cfg))
        logger.info("publication %s name=%s", done, src.publication)
        for warning in toast_risks(conn, cfg):
            logger.warning("%s", warning)
        schema = src.signal_table.rpartition(".")[0] or "public"
        truncate.install(conn, src.tables, schema)


@dataclass
class ConnectClient:
    """A small client of the Kafka Connect REST API."""

    url: str
    timeout_s: float = 15.0

    def request(self, method: str, path: str, body: Any = None) -> Any:
        if not self.url.startswith(("http://", "https://")):
            raise FatalError(f"connect.url must be http(s): {self.url!r}")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(  # noqa: S310 (scheme checked above)
            self.url.rstrip("/") + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if exc.code == 404:
                return None
            if exc.code in (409, 500, 503):
                raise TransientError(
                    f"Connect {method} {path}: {exc.code} {detail}"
                ) from exc
            raise FatalError(f"Connect {method} {path}: {exc.code} {detail}") from exc
        except OSError as exc:
            raise TransientError(f"Connect at {self.url} unreachable: {exc}") from exc
        return json.loads(raw) if raw else None


def apply(cfg: Config) -> dict[str, Any]:
    """Create or update the connector; returns Connect's answer."""
    prepare_source(cfg)
    client = ConnectClient(cfg.connect.url)
    settings = connector_config(cfg)
    result = client.request(
        "PUT", f"/connectors/{cfg.connect.connector}/config", settings
    )
    logger.info(
        "connector applied name=%s tables=%d",
        cfg.connect.connector,
        len(cfg.source.tables),
    )
    return dict(result or {})


def delete(cfg: Config) -> bool:
    client = ConnectClient(cfg.connect.url)
    found = client.request("GET", f"/connectors/{cfg.connect.connector}")
    if found is None:
        return False
    client.request("DELETE", f"/connectors/{cfg.connect.connector}")
    return True


def drop_slot(cfg: Config, timeout_s: float = 30.0) -> bool:
    """Drop the replication slot and publication (after ``delete``).

    The connector's task releases the slot asynchronously, so this waits up
    to ``timeout_s`` for it to become inactive. Returns whether it is gone.
    """
    import time

    src = cfg.source
    deadline = time.monotonic() + timeout_s
    with psycopg.connect(src.dsn.get_secret_value(), autocommit=True) as conn:
        conn.execute(f"DROP PUBLICATION IF EXISTS {src.publication}")
        while True:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (src.slot,),
            ).fetchone()
            if row is None:
                return True
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (src.slot,))
                return True
            if time.monotonic() > deadline:
                logger.warning("slot still active, not dropped slot=%s", src.slot)
                return False
            time.sleep(0.5)


def slot_lag_bytes(cfg: Config) -> int | None:
    """Bytes of WAL the slot has not confirmed yet, or None without a slot."""
    with psycopg.connect(cfg.source.dsn.get_secret_value(), connect_timeout=5) as conn:
        row = conn.execute(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn)::bigint "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (cfg.source.slot,),
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def status(cfg: Config) -> dict[str, Any]:
    client = ConnectClient(cfg.connect.url)
    st = client.request("GET", f"/connectors/{cfg.connect.connector}/status")
    out: dict[str, Any] = {"connector": cfg.connect.connector}
    if st is None:
        out["state"] = "ABSENT"
        out["tasks"] = []
    else:
        out["state"] = st["connector"]["state"]
        out["tasks"] = [
            {"id": t["id"], "state": t["state"], "trace": t.get("trace", "")[:300]}
            for t in st.get("tasks", [])
        ]
    try:
        out["slot_lag_bytes"] = slot_lag_bytes(cfg)
    except psycopg.Error as exc:
        out["slot_lag_bytes"] = None
        out["slot_error"] = exc.__class__.__name__
    return out


def streaming(cfg: Config) -> bool:
    """Whether the connector has finished its initial snapshot and streams.

    Read from the source offset Connect committed for it: Debezium writes a
    ``snapshot`` key there while it snapshots and a streaming position
    (``lsn_proc``) once it streams. Before any offset is committed (the
    first seconds of a connector) this is False: whether a snapshot is
    still coming is not known yet.
    """
    client = ConnectClient(cfg.connect.url)
    found = client.request("GET", f"/connectors/{cfg.connect.connector}/offsets")
    offsets = [o.get("offset") or {} for o in (found or {}).get("offsets", [])]
    return bool(offsets) and all(
        o and not o.get("snapshot") and "last_snapshot_record" not in o for o in offsets
    )


def wait_running(cfg: Config, timeout_s: float = 120.0) -> dict[str, Any]:
    """Block until the connector and its task run; raise if a task failed."""
    import time

    deadline = time.monotonic() + timeout_s
    st: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            st = status(cfg)
        except TransientError:
            time.sleep(1)
            continue
        tasks = st.get("tasks", [])
        if any(t["state"] == "FAILED" for t in tasks):
            raise FatalError(f"connector task failed: {tasks[0]['trace']}")
        if (
            st.get("state") == "RUNNING"
            and tasks
            and all(t["state"] == "RUNNING" for t in tasks)
        ):
            return st
        time.sleep(0.5)
    raise FatalError(f"connector not running after {timeout_s:.0f}s: {st}")
