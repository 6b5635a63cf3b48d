"""readside against a PostgreSQL role that may log in only with SCRAM over
TLS.

The stack's PostgreSQL serves TLS with the stack's certificate and keeps
one role, ``readside_tls``, whose ``pg_hba.conf`` rules ask SCRAM over TLS
and refuse it without (``pipeline.stack.tls.postgres_client``). Here that
role owns the test's tables, and every connection of readside is that role
over TLS: ``source.dsn`` carries its password, ``sslmode=verify-full`` and
the stack's CA as ``sslrootcert``. ``connector apply`` (publication and
helper tables), Debezium (the DSN's TLS settings reach its connector
config; the password through a Connect config provider), the workers'
aggregate re-reads, ``snapshot`` and ``verify`` all work, and the server's
own view of its sessions shows each one encrypted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from harness import PG_ADMIN_DSN, Pipeline
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from connectors.debezium import ConnectClient, connector_config
from pipeline.config import StackConfig
from pipeline.stack import tls

pytestmark = pytest.mark.integration

SCHEMA = """
CREATE TABLE authors (id integer PRIMARY KEY, name text NOT NULL);
CREATE TABLE books (
    id        integer PRIMARY KEY,
    author_id integer NOT NULL REFERENCES authors(id),
    title     text NOT NULL
);
ALTER TABLE books REPLICA IDENTITY FULL;
"""
TABLES = ["public.authors", "public.books"]
VIEWS: dict[str, Any] = {
    "books": {"table": "public.books", "sinks": ["redis"]},
    "authors": {
        "kind": "aggregate",
        "table": "public.authors",
        "sinks": ["redis"],
        "embed": {
            "books": {
                "children": "public.books",
                "on": {"author_id": "id"},
                "exclude": ["author_id"],
                "order_by": ["id"],
            }
        },
    },
}


def role_dsn(p: Pipeline, stack: StackConfig, **override: str) -> str:
    """``p``'s database as the TLS role, over TLS verified by the stack's CA."""
    settings = {**tls.postgres_client(Path(stack.data_dir)), **override}
    return make_conninfo(**{**conninfo_to_dict(p.dsn), **settings})


def own_as_role(p: Pipeline) -> None:
    """The TLS role owns the tables and may create the publication and the
    helper tables in ``p``'s database (``connector apply`` needs an owner)."""
    role = tls.POSTGRES_ROLE
    p.sql(f'GRANT CREATE ON DATABASE "{p.dbname}" TO {role}')
    p.sql(f"GRANT CREATE, USAGE ON SCHEMA public TO {role}")
    for table in TABLES:
        p.sql(f"ALTER TABLE {table} OWNER TO {role}")


def sessions(p: Pipeline) -> list[tuple[str, bool]]:
    """(backend type, encrypted) of the TLS role's sessions in ``p``'s
    database, its replication connection included."""
    rows = p.sql(
        "SELECT a.backend_type, s.ssl FROM pg_stat_activity a "
        "JOIN pg_stat_ssl s USING (pid) WHERE a.usename = %s AND a.datname = %s",
        (tls.POSTGRES_ROLE, p.dbname),
    )
    return [tuple(r) for r in rows]


def test_pipeline_runs_as_a_scram_role_over_tls(
    make_pipeline: Any, stack: StackConfig, tmp_path: Path
) -> None:
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    own_as_role(p)
    dsn = role_dsn(p, stack)
    password = conninfo_to_dict(dsn)["password"]
    secrets = tmp_path / "capture.properties"
    secrets.write_text(f"password={password}\n")
    secrets.chmod(0o600)

    def secured(data: dict[str, Any]) -> None:
        data["source"]["dsn"] = dsn
        data["connect"]["password_ref"] = f"${{file:{secrets}:password}}"

    p.rewrite(secured)
    settings = connector_config(p.config)
    assert settings["database.user"] == tls.POSTGRES_ROLE
    assert settings["database.sslmode"] == "verify-full"
    assert settings["database.sslrootcert"].endswith("ca.crt")

    p.sql("INSERT INTO authors SELECT g, 'author ' || g FROM generate_series(1, 20) g")
    p.sql(
        "INSERT INTO books SELECT g, 1 + g % 20, 'book ' || g "
        "FROM generate_series(1, 60) g"
    )
    p.apply_connector()  # the publication and helper tables: the role, over TLS
    p.start_worker()
    p.sql("UPDATE books SET title = title || '!' WHERE id % 4 = 0")
    p.sql("UPDATE authors SET name = upper(name) WHERE id % 3 = 0")
    p.sql("DELETE FROM books WHERE id % 9 = 0")
    p.wait_drained(timeout=180)
    p.assert_converged()  # verify: the role over TLS
    p.run_cli("snapshot", "authors")  # an aggregate snapshot: the role over TLS
    p.assert_converged()

    seen = sessions(p)
    kinds = {kind for kind, _ssl in seen}
    assert "walsender" in kinds, seen  # Debezium's replication connection
    assert "client backend" in kinds, seen  # the worker's re-reads
    assert all(ssl for _kind, ssl in seen), seen
    slot_user = p.sql(
        "SELECT a.usename, s.ssl FROM pg_replication_slots sl "
        "JOIN pg_stat_activity a ON a.pid = sl.active_pid "
        "JOIN pg_stat_ssl s ON s.pid = sl.active_pid WHERE sl.slot_name = %s",
        (p.config.source.slot,),
    )
    assert [tuple(r) for r in slot_user] == [(tls.POSTGRES_ROLE, True)]
    shown = ConnectClient.of(p.config.connect).request(
        "GET", f"/connectors/{p.config.connect.connector}/config"
    )
    assert password not in str(shown)


def test_the_role_needs_tls_and_its_scram_password(
    make_pipeline: Any, stack: StackConfig
) -> None:
    p = make_pipeline(SCHEMA, TABLES, VIEWS)
    with psycopg.connect(role_dsn(p, stack)) as conn:
        row = conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"
        ).fetchone()
        assert row == (True,)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(role_dsn(p, stack, sslmode="disable"))
    with pytest.raises(psycopg.OperationalError, match="password authentication"):
        psycopg.connect(role_dsn(p, stack, password="not-the-password-Pq19"))
    with psycopg.connect(PG_ADMIN_DSN) as admin:
        stored = admin.execute(
            "SELECT rolpassword, rolsuper, rolreplication FROM pg_authid "
            "WHERE rolname = %s",
            (tls.POSTGRES_ROLE,),
        ).fetchone()
        ssl = admin.execute("SHOW ssl").fetchone()
    assert stored is not None
    assert stored[0].startswith("SCRAM-SHA-256$"), "not a SCRAM hash"
    assert stored[1:] == (False, True)
    assert ssl == ("on",)
