"""The stack's PostgreSQL clusters: the source of the captured tables
(``postgres``, logical decoding, TLS and SCRAM) and the base of FerretDB's
backend (:class:`pipeline.stack.ferretdb.FerretBackend`).

A cluster is made by ``initdb`` as the service user, then secured at each
start: passwords on every TCP rule, the superuser's kept in the cluster's
folder (:mod:`pipeline.stack.tls`). The stack itself logs in through the
unix socket in that folder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import FatalError
from pipeline.stack import tls
from pipeline.stack.services import (
    SERVICE_USER,
    Service,
    as_service_user,
    chown_service_user,
)

if TYPE_CHECKING:
    import psycopg

#: a libpq ``passfile`` that is never there: a check of what a login without
#: the password gets must not find it in ``~/.pgpass``
NO_PASSFILE = "/nonexistent/readside-no-passfile"


class Postgres(Service):
    name = "postgres"
    #: fast shutdown: clients are disconnected. SIGTERM is PostgreSQL's smart
    #: shutdown, which waits for every client to leave: with workers
    #: connected it never ended, and the stop's SIGKILL left a stale lock
    #: file that failed the next start.
    stop_signal = signal.SIGINT
    #: TLS with the stack's certificate, and the TLS role (pipeline.stack.tls)
    secure = True

    def prepare(self) -> None:
        pgdata = self.ctx.dir(self.name)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(pgdata)
        # Passwords on TCP, also in a cluster made before they were asked.
        hba = pgdata / "pg_hba.conf"
        hba.write_text(tls.passwords_on_tcp(hba.read_text()))
        tls.superuser(pgdata)
        if self.secure:
            tls.secure_postgres(pgdata, self.ctx.data)
            for name in ("server.crt", "server.key", tls.POSTGRES_CLIENT):
                chown_service_user(pgdata / name)

    def ready(self) -> None:
        """The superuser's password (set through the socket, which needs
        none), and the TLS role on a secure server."""
        pgdata = self.ctx.dir(self.name)
        tls.make_role(self.admin_dsn(), tls.superuser(pgdata), "LOGIN SUPERUSER")
        if self.secure:
            tls.make_postgres_role(self.admin_dsn(), pgdata)

    def _initdb(self, pgdata: Path) -> None:
        pgdata.mkdir(parents=True, exist_ok=True)
        chown_service_user(pgdata)
        init = subprocess.run(
            as_service_user(
                [
                    str(self.ctx.installed.postgres_bin / "initdb"),
                    "-D",
                    str(pgdata),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if init.returncode != 0:
            raise FatalError(
                f"initdb of {pgdata} failed (the '{SERVICE_USER}' user must be "
                f"able to enter every parent directory): {init.stderr.strip()}"
            )
        with (pgdata / "postgresql.conf").open("a") as f:
            f.write(
                "\n# readside local stack\n"
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{pgdata}'\n"
                "fsync = on\n" + self.settings()
            )

    def settings(self) -> str:
        """postgresql.conf lines of this server's role: the source of the
        captured tables, with logical decoding."""
        return (
            "wal_level = logical\nmax_replication_slots = 20\n"
            "max_wal_senders = 20\nmax_connections = 200\n"
            "shared_buffers = 256MB\nwal_sender_timeout = 0\n"
        )

    def command(self) -> list[str]:
        return as_service_user(
            [
                str(self.ctx.installed.postgres_bin / "postgres"),
                "-D",
                str(self.ctx.dir(self.name)),
                # The configured port, also when the cluster was made with
                # another one (postgresql.conf keeps the port of its initdb).
                "-p",
                str(self.port),
            ]
        )

    def probe(self) -> str | None:
        """Through the socket (where this data directory has it): a login,
        then :meth:`server_problem`; then :meth:`tcp_problem`."""
        import psycopg

        if not self.socket_here():
            return self.tcp_problem()
        try:
            with psycopg.connect(self.admin_dsn(), connect_timeout=2) as conn:
                problem = self.server_problem(conn)
        except psycopg.Error as exc:
            return f"cannot connect: {exc.__class__.__name__}"
        return problem or self.tcp_problem()

    def server_problem(self, conn: psycopg.Connection[Any]) -> str | None:
        """What is wrong with the running server's settings, asked on
        ``conn`` (the superuser): the source needs logical decoding, and TLS
        where it is ``secure``."""
        row = conn.execute("SHOW wal_level").fetchone()
        if row is None or row[0] != "logical":
            return f"wal_level is {row[0] if row else '?'}, expected logical"
        ssl = conn.execute("SHOW ssl").fetchone()
        if self.secure and (ssl is None or ssl[0] != "on"):
            return f"TLS off (ssl = off): restart {self.name}"
        return None

    def tcp_problem(self) -> str | None:
        """Whether TCP logins are checked: a wrong password must be refused
        (a server that takes it still has its ``trust`` rules)."""
        import psycopg

        wrong = f"postgresql://{tls.SUPERUSER}:not-the-password@127.0.0.1:{self.port}/"
        try:
            with psycopg.connect(wrong, connect_timeout=2, passfile=NO_PASSFILE):
                pass
        except psycopg.OperationalError as exc:
            if "password authentication failed" in str(exc):
                return None
            return f"cannot connect over TCP: {exc.__class__.__name__}"
        return f"takes a wrong password over TCP (trust rules): restart {self.name}"

    def socket_here(self) -> bool:
        """Whether the server's socket is in this data directory's cluster
        folder: not when ``stack status`` runs from another directory, which
        has neither the socket nor the password, and probes TCP alone."""
        return (self.ctx.dir(self.name) / f".s.PGSQL.{self.port}").exists()

    def admin_dsn(self, db: str = "postgres") -> str:
        """The superuser through the unix socket in the cluster's folder, as
        the stack sets itself up (no password: see :func:`tls.passwords_on_tcp`)."""
        from psycopg.conninfo import make_conninfo

        folder = str(self.ctx.dir(self.name))
        return make_conninfo(host=folder, port=self.port, user="postgres", dbname=db)


def superuser_dsn(
    data: Path, port: int, service: str = "postgres", db: str = "postgres"
) -> str:
    """The libpq URI of the superuser of the stack's cluster ``service``
    (``postgres``, the source, or ``ferretdb_backend``) on ``port``, with
    its password.

    Raises:
        FileNotFoundError: that cluster never started with a password.
    """
    user = json.loads((data / service / tls.SUPERUSER_CLIENT).read_text())
    password = urllib.parse.quote(user["password"], safe="")
    return f"postgresql://{user['username']}:{password}@127.0.0.1:{port}/{db}"
