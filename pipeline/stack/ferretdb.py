"""The stack's MongoDB stand-in: FerretDB 1.24 on a PostgreSQL of its own.

FerretDB keeps no users: a client that logs in (``authMechanism=PLAIN``) is
passed on to its PostgreSQL as that role, with that password, which
PostgreSQL checks (SCRAM); a client that does not log in works as the role
of FerretDB's own connection string. That role is :data:`ANONYMOUS_ROLE`,
which the backend refuses whatever it is asked (``pg_hba.conf``), so every
command of such a client fails, as on a MongoDB server with access control
on. The one role that gets in is :data:`MONGO_ROLE`, whose password the
backend checks and which owns only what it creates: the stack's MongoDB
sinks log in as it (:func:`ferretdb_client`), so a wrong password is refused
as a MongoDB server with users would refuse it. FerretDB answers TLS on a
second port with the stack's certificate (:func:`ferretdb_tls_client`).
"""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.stack import tls
from pipeline.stack.postgres import Postgres
from pipeline.stack.services import Service, port_in_use

if TYPE_CHECKING:
    import psycopg
    import pymongo

#: Connections FerretDB may open to its PostgreSQL, per user. FerretDB 1.24
#: holds one per statement of an ``update`` command until the command ends
#: (and a second one to apply each statement): commands whose statements add
#: up to its pool (50 by default) wait for each other for good, and FerretDB
#: then answers nothing. 500 leaves room for 45 concurrent commands of the
#: MongoDB sink (10 statements each).
FERRETDB_POOL = 500
#: the backend role a MongoDB client logs in as, and where its password is kept
MONGO_ROLE = "readside_mongo"
MONGO_CLIENT = "mongo-client.json"
#: the role of FerretDB's connection string, which a client that does not log
#: in works as: the backend refuses it (no such role is ever made either)
ANONYMOUS_ROLE = "readside_anonymous"
#: the backend's connection limit: a pool for the anonymous clients and one
#: for the MongoDB role
_CONNECTIONS = f"max_connections = {2 * FERRETDB_POOL + 20}"
_HBA_MARK = "# readside local stack: the MongoDB role, SCRAM only"


def backend_hba(original: str) -> str:
    """``pg_hba.conf`` with the MongoDB roles' rules first (the first
    matching line wins): :data:`MONGO_ROLE`'s password checked over TCP, no
    other way in; :data:`ANONYMOUS_ROLE` refused every way."""
    rules = [
        _HBA_MARK,
        f"host all {ANONYMOUS_ROLE} 0.0.0.0/0 reject",
        f"local all {ANONYMOUS_ROLE} reject",
        f"host all {MONGO_ROLE} 127.0.0.1/32 scram-sha-256",
        f"host all {MONGO_ROLE} 0.0.0.0/0 reject",
        f"local all {MONGO_ROLE} reject",
        "# end of readside's MongoDB rules",
    ]
    return tls.hba_first(rules, original)


def ferretdb_client(data: Path, port: int) -> str:
    """The MongoDB URI of the stack's FerretDB as :data:`MONGO_ROLE`.

    Raises:
        FileNotFoundError: the stack's FerretDB backend never made the role.
    """
    user = json.loads((data / FerretBackend.name / MONGO_CLIENT).read_text())
    name = urllib.parse.quote(user["username"], safe="")
    password = urllib.parse.quote(user["password"], safe="")
    return f"mongodb://{name}:{password}@127.0.0.1:{port}/?authMechanism=PLAIN"


def ferretdb_tls_client(data: Path, tls_port: int) -> str:
    """The MongoDB URI of the stack's FerretDB as :data:`MONGO_ROLE` over TLS:
    :func:`ferretdb_client` on ``tls_port``, trusting the stack's CA.

    Raises:
        FileNotFoundError: the stack's FerretDB backend never made the role.
    """
    ca = urllib.parse.quote(str(data / tls.TLS_DIR / "ca.crt"), safe="/")
    return ferretdb_client(data, tls_port) + f"&tls=true&tlsCAFile={ca}"


class FerretBackend(Postgres):
    """The PostgreSQL that stores FerretDB's data: a server of its own, so
    the MongoDB stand-in neither loads the source nor stops with it.

    FerretDB's PostgreSQL handler finds a document by ``_id`` through an
    index; its SQLite handler scans the collection for every update (50 ms
    per document at 3,000 documents, against 2 ms here), which made the
    stand-in, not readside, the bottleneck of every MongoDB figure.
    """

    name = "ferretdb_backend"
    secure = False

    def settings(self) -> str:
        return (
            "wal_level = minimal\nmax_wal_senders = 0\nshared_buffers = 128MB\n"
            f"{_CONNECTIONS}\npassword_encryption = 'scram-sha-256'\n"
        )

    def prepare(self) -> None:
        super().prepare()
        pgdata = self.ctx.dir(self.name)
        hba = pgdata / "pg_hba.conf"
        hba.write_text(backend_hba(hba.read_text()))
        conf = pgdata / "postgresql.conf"
        if _CONNECTIONS not in conf.read_text():  # a backend made before the role
            with conf.open("a") as f:
                f.write(f"\n# readside local stack: two pools\n{_CONNECTIONS}\n")
        tls.secret_file(pgdata / MONGO_CLIENT, MONGO_ROLE)

    def ready(self) -> None:
        """Make (or bring up to date) the MongoDB role: it logs in with its
        password and may create schemas (FerretDB makes one per MongoDB
        database), nothing more; and the superuser's password."""
        super().ready()
        user = tls.secret_file(self.ctx.dir(self.name) / MONGO_CLIENT, MONGO_ROLE)
        tls.make_role(
            self.admin_dsn(),
            user,
            "LOGIN NOSUPERUSER",
            "CREATE, CONNECT ON DATABASE postgres",
        )

    def server_problem(self, conn: psycopg.Connection[Any]) -> str | None:
        """Nothing to check once logged in: no logical decoding, no TLS."""
        return None


class FerretDB(Service):
    """FerretDB on two ports: the plain one everything uses, and TLS on
    ``stack.ferretdb_tls_port`` with the stack's certificate (no client
    certificate asked: ``--listen-tls-ca-file`` would require one); a client
    logs in on either as on the other (:func:`ferretdb_tls_client`)."""

    name = "ferretdb"
    needs = ("ferretdb_backend",)

    @property
    def ports(self) -> list[int]:
        return [self.port, self.ctx.cfg.ferretdb_tls_port]

    def prepare(self) -> None:
        super().prepare()
        tls.stack_certs(self.ctx.data)

    def command(self) -> list[str]:
        d = self.ctx.dir("ferretdb")
        certs = tls.stack_certs(self.ctx.data)
        backend = (
            f"postgresql://{ANONYMOUS_ROLE}@127.0.0.1:{self.ctx.cfg.ferretdb_backend_port}"
            f"/postgres?pool_max_conns={FERRETDB_POOL}"
        )
        return [
            str(self.ctx.installed.ferretdb),
            "--handler=postgresql",
            f"--postgresql-url={backend}",
            f"--listen-addr=127.0.0.1:{self.port}",
            f"--listen-tls=127.0.0.1:{self.ctx.cfg.ferretdb_tls_port}",
            f"--listen-tls-cert-file={certs.cert}",
            f"--listen-tls-key-file={certs.key}",
            f"--state-dir={d}",
            "--telemetry=disable",
            "--debug-addr=-",
            "--log-level=WARN",
        ]

    def probe(self) -> str | None:
        """``ping`` on the plain port without logging in, which must fail (a
        FerretDB that answers it runs an older connection string: restart
        it); then as :data:`MONGO_ROLE` on both ports (from another
        directory, which has no credentials, only that both ports answer)."""
        import pymongo
        import pymongo.errors

        try:
            _ping(pymongo.MongoClient(port=self.port, serverSelectionTimeoutMS=2000))
            return "answers a client that did not log in: restart ferretdb"
        except pymongo.errors.OperationFailure:
            pass  # the backend refused the anonymous role
        except pymongo.errors.PyMongoError as exc:
            return f"ping failed: {exc.__class__.__name__}"
        tport = self.ctx.cfg.ferretdb_tls_port
        if not port_in_use(tport):
            return f"TLS port {tport} closed: restart ferretdb"
        try:
            uris = [
                ("", ferretdb_client(self.ctx.data, self.port)),
                (f" on TLS port {tport}", ferretdb_tls_client(self.ctx.data, tport)),
            ]
        except FileNotFoundError:
            return None  # a stack whose backend never made the role
        for where, uri in uris:
            try:
                _ping(pymongo.MongoClient(uri, serverSelectionTimeoutMS=2000))
            except pymongo.errors.PyMongoError as exc:
                return f"ping as {MONGO_ROLE}{where} failed: {exc.__class__.__name__}"
        return None


def _ping(client: pymongo.MongoClient[dict[str, object]]) -> None:
    with client:
        client.admin.command("ping")
