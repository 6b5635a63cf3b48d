"""The PostgreSQL side of the source: what readside makes and checks there.

Before the connector (re)starts, ``readside connector apply``
(:func:`connectors.debezium.apply`) runs :func:`prepare_source`: it creates
the two helper tables the connector relies on (the signal table for
incremental snapshots and the heartbeat table that keeps an idle database's
slot moving), checks ``source.tables`` against the catalog
(:func:`table_problems`), warns of tables that can send unchanged TOASTed
values (:func:`toast_risks`), creates or updates the publication
(:func:`ensure_publication`) and installs the truncate triggers
(:mod:`connectors.truncate`).

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

import logging
from typing import Any

import psycopg
from psycopg import sql

from connectors import truncate
from pipeline.config import Config
from pipeline.errors import ConfigError, FatalError, TransientError

logger = logging.getLogger(__name__)


def heartbeat_sql(table: str) -> str:
    return (
        f"INSERT INTO {table} (id, ts) VALUES (1, now()) "
        "ON CONFLICT (id) DO UPDATE SET ts = EXCLUDED.ts"
    )


def captured_tables(cfg: Config) -> list[str]:
    """The tables the connector captures: the config's, heartbeat and signal."""
    src = cfg.source
    return list(dict.fromkeys([*src.tables, src.heartbeat_table, src.signal_table]))


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
    It must be a table whose changes PostgreSQL logs (not a view, nor
    UNLOGGED), with a primary key (the records' key, which compacted topics
    require) holding no generated column (see :func:`generated_columns`).
    """
    problems: list[str] = []
    for table in tables:
        found = conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()
        if found is None or found[0] is None:
            problems.append(f"source.tables: table {table} does not exist")
            continue
        kind = conn.execute(_KIND, (table,)).fetchone()
        if kind is not None and kind[0] not in ("r", "p"):
            what = _KINDS.get(str(kind[0]), "not a table")
            problems.append(
                f"source.tables: {table} is {what}: PostgreSQL streams no change "
                "of it; list the tables it reads"
            )
            continue
        if kind is not None and kind[1] == "u":
            problems.append(
                f"source.tables: table {table} is UNLOGGED: PostgreSQL writes no "
                "WAL for its rows, so no change of it can be streamed; ALTER TABLE "
                f"{table} SET LOGGED"
            )
            continue
        root = conn.execute(_ROOT, {"t": table}).fetchone()
        if root is not None:
            problems.append(
                f"source.tables: {table} is a partition of {root[0]}; list the "
                f"partitioned table {root[0]} instead (changes of every partition "
                "are published under the root's name, key and topic)"
            )
        if conn.execute(_PRIMARY, (table,)).fetchone() is None:
            problems.append(
                f"source.tables: table {table} has no primary key: its changes "
                "would reach Kafka without a key, which the broker refuses in a "
                "compacted topic (the connector's task fails, and no table's "
                "changes reach the topics any more); give it a primary key"
            )
            continue
        keyed = [str(r[0]) for r in conn.execute(_GENERATED_KEY, (table,)).fetchall()]
        if keyed:
            problems.append(
                f"source.tables: the primary key of {table} holds generated "
                f"column(s) {', '.join(keyed)}, which pgoutput never streams: its "
                "changes would reach Kafka without a key, and the broker refuses "
                "them in a compacted topic (the connector's task fails); key the "
                "table by columns that are not generated"
            )
    return problems


#: A relation's kind and persistence.
_KIND = "SELECT relkind, relpersistence FROM pg_class WHERE oid = to_regclass(%s)"
_KINDS = {"v": "a view", "m": "a materialized view", "f": "a foreign table"}

#: A row if the table has a primary key.
_PRIMARY = "SELECT 1 FROM pg_index WHERE indrelid = to_regclass(%s) AND indisprimary"

#: The generated columns in a table's primary key.
_GENERATED_KEY = """
SELECT a.attname
FROM pg_index i
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
WHERE i.indrelid = to_regclass(%s) AND i.indisprimary AND a.attgenerated <> ''
ORDER BY a.attnum
"""


#: Columns PostgreSQL may store out of line (TOAST), per table, for tables
#: whose replica identity is not FULL.
_TOASTABLE = """
SELECT a.attname
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.oid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attstorage IN ('x', 'e') AND c.relreplident <> 'f'
  AND a.attgenerated = ''  -- in no record: always read (generated_columns)
ORDER BY a.attnum
"""


#: (table, column) of each generated column of the tables named (a table
#: gone has none); the connector's config and the workers' reads
#: (:mod:`pipeline.toast`) take it alike.
GENERATED = """
SELECT t.name, a.attname
FROM unnest(%(tables)s::text[]) AS t(name)
JOIN pg_attribute a ON a.attrelid = to_regclass(t.name)
WHERE a.attnum > 0 AND NOT a.attisdropped AND a.attgenerated <> ''
ORDER BY 1, 2
"""


def generated_columns(conn: psycopg.Connection[Any], cfg: Config) -> list[str]:
    """The generated columns (``GENERATED ALWAYS AS (...) STORED``) of the
    captured tables, as ``schema.table.column``.

    pgoutput streams none of them; Debezium's snapshots read them with the
    row, and its incremental snapshot of such a table fails (and is skipped,
    with a warning in Connect's log only). The connector leaves them out
    (``column.exclude.list``); the workers read them from the source row
    (:mod:`pipeline.toast`).
    """
    rows = conn.execute(GENERATED, {"tables": captured_tables(cfg)}).fetchall()
    return [f"{table}.{column}" for table, column in rows]


def read_generated_columns(cfg: Config) -> list[str]:
    """:func:`generated_columns`, on a connection of its own to the source.

    Raises:
        TransientError: the source cannot be read.
    """
    try:
        with psycopg.connect(
            cfg.source.dsn.get_secret_value(), autocommit=True, connect_timeout=10
        ) as conn:
            return generated_columns(conn, cfg)
    except psycopg.Error as exc:
        raise TransientError(f"source not read: {exc}") from exc


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


#: The tables a publication publishes, however it names them (a table, a
#: schema), with whether each has a row filter or a column list (PostgreSQL
#: 15 and later; before, neither exists).
_PUBLISHED_15 = """
SELECT t.schemaname || '.' || t.tablename, t.rowfilter IS NOT NULL,
       coalesce(pr.prattrs IS NOT NULL, false)
FROM pg_publication_tables t
LEFT JOIN pg_publication_rel pr ON pr.prpubid = %(oid)s
  AND pr.prrelid =
    (quote_ident(t.schemaname) || '.' || quote_ident(t.tablename))::regclass
WHERE t.pubname = %(name)s
"""
_PUBLISHED = """
SELECT schemaname || '.' || tablename, false, false
FROM pg_publication_tables WHERE pubname = %(name)s
"""

#: the changes a publication must publish for readside
_OPS = ("insert", "update", "delete")


def publication_problems(
    conn: psycopg.Connection[Any], cfg: Config, tables: list[str]
) -> list[str]:
    """How ``source.publication`` keeps changes of ``tables`` from the stream.

    Someone may change readside's publication while the connector runs: drop
    a table from it, add a row filter or a column list, stop publishing
    deletes, or drop it. PostgreSQL then leaves those changes out of the
    stream without an error, the connector and its heartbeats go on, and the
    views of those tables stay as they were while every figure says they are
    current. Each problem names the way back: ``readside connector apply``
    publishes the tables whole again, then each view of them is loaded from
    the source again (what changed meanwhile never reaches the stream).
    """
    name = cfg.source.publication
    row = conn.execute(
        "SELECT oid, puballtables, pubviaroot, pubinsert, pubupdate, pubdelete "
        "FROM pg_publication WHERE pubname = %s",
        (name,),
    ).fetchone()
    if row is None:
        return [
            f"publication {name} does not exist: no change reaches readside"
            + _way_back(cfg, tables)
        ]
    oid, all_tables, via_root, *published = row
    out: list[str] = []
    left_out = [op for op, on in zip(_OPS, published, strict=True) if not on]
    if left_out:
        out.append(
            f"publication {name} does not publish {'s, '.join(left_out)}s"
            + _way_back(cfg, tables)
        )
    if not via_root:
        out.append(
            f"publication {name} does not publish through partition roots "
            "(publish_via_partition_root): changes of partitions go under names "
            "no view reads" + _way_back(cfg, tables)
        )
    if all_tables:
        return out
    query = _PUBLISHED_15 if conn.info.server_version >= 150000 else _PUBLISHED
    found = conn.execute(query, {"oid": oid, "name": name}).fetchall()
    members = {str(t): (bool(f), bool(c)) for t, f, c in found}
    what = {
        "does not publish {}: their changes do not reach readside": [
            t for t in tables if t not in members
        ],
        "has a row filter on {}: changes of the rows it leaves out do not reach "
        "readside": [t for t in tables if members.get(t, (False, False))[0]],
        "has a column list on {}: the columns it leaves out do not reach readside": [
            t for t in tables if members.get(t, (False, False))[1]
        ],
    }
    for text, found_tables in what.items():
        if found_tables:
            said = text.format(", ".join(found_tables))
            out.append(f"publication {name} {said}" + _way_back(cfg, found_tables))
    return out


def reloads(cfg: Config, tables: list[str]) -> list[str]:
    """The command that loads again, from the source, each view of ``tables``."""
    return [
        f"readside snapshot {view} --from-source"
        for view, vc in sorted(cfg.effective_views().items())
        if set(vc.tables()) & set(tables)
    ]


def _way_back(cfg: Config, tables: list[str]) -> str:
    """What to run once ``tables`` were left out of the stream: publish them
    again, then load each view that reads them from the source again
    (``--from-source``: a tombstone for each row gone whose delete the topic
    lacks, then a table view through Debezium's incremental snapshot, an
    aggregate view in chunks)."""
    loads = reloads(cfg, tables)
    then = (
        f", then load again what changed meanwhile, which never reached the "
        f"stream ({'; '.join(loads)})"
        if loads
        else ""
    )
    return f"; publish them whole again (readside connector apply){then}"


def ensure_publication(
    conn: psycopg.Connection[Any], cfg: Config, tables: list[str]
) -> str:
    """Make ``source.publication`` publish exactly ``tables``, whole (every
    row, column and change), through roots.

    Idempotent; returns ``created``, ``updated`` or ``unchanged``. Runs
    before the connector (re)starts, so that the stream it reads from then
    on carries every change of a partition under the root's name.

    Raises:
        FatalError: the publication is ``FOR ALL TABLES`` (readside keeps its
            table list; drop it or name another ``source.publication``).
    """
    name = cfg.source.publication
    pub = sql.Identifier(name)
    members = sql.SQL(", ").join(_table(t) for t in tables)
    with conn.transaction():
        row = conn.execute(
            "SELECT oid, puballtables FROM pg_publication WHERE pubname = %s",
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
        oid, all_tables = row
        if all_tables:
            raise FatalError(
                f"publication {name} is FOR ALL TABLES; readside keeps the "
                "publication's table list: drop it (DROP PUBLICATION "
                f"{name}) or set another source.publication"
            )
        problems = publication_problems(conn, cfg, tables)
        have = {str(r[0]) for r in conn.execute(_MEMBERS, (oid,)).fetchall()}
        if not problems and have == set(tables):
            return "unchanged"
        conn.execute(
            sql.SQL(
                "ALTER PUBLICATION {} SET (publish_via_partition_root = true, "
                "publish = 'insert, update, delete, truncate')"
            ).format(pub)
        )
        # without row filters or column lists: every row, every column
        conn.execute(sql.SQL("ALTER PUBLICATION {} SET TABLE {}").format(pub, members))
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
        done = ensure_publication(conn, cfg, captured_tables(cfg))
        logger.info("publication %s name=%s", done, src.publication)
        for warning in toast_risks(conn, cfg):
            logger.warning("%s", warning)
        schema = src.signal_table.rpartition(".")[0] or "public"
        truncate.install(conn, src.tables, schema)
