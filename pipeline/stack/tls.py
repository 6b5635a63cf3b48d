"""The local stack's certificates and the credentials of its secured clients.

The first ``stack up`` makes a certificate authority of its own and a server
certificate for ``127.0.0.1`` and ``localhost`` signed by it, under
``<data>/tls/`` (``ca.crt``, ``server.crt``, ``server.key``; the CA's key
beside them), with the ``openssl`` command (PostgreSQL's Debian package
depends on it). They are kept: a later start reuses them, so a client that
trusts ``ca.crt`` keeps trusting the stack.

PostgreSQL serves TLS on its port with them and requires SCRAM over TLS of
one role (:func:`postgres_client`). Each service keeps the secrets its
clients log in with in files of its own data directory
(:func:`secret_file`): Redis its ACL users (``pipeline.stack.redis_server``),
the broker its SASL users (``pipeline.stack.kafka_broker``), FerretDB's
backend its MongoDB role (``pipeline.stack.ferretdb``); the broker serves
the same certificate on its SASL_SSL listener, Redis and FerretDB on their
TLS ports.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import FatalError

TLS_DIR = "tls"
#: the PostgreSQL role that may log in only with SCRAM over TLS
POSTGRES_ROLE = "readside_tls"
POSTGRES_CLIENT = "scram-client.json"


@dataclass(frozen=True)
class Certs:
    """A CA certificate and a server certificate and key it signed."""

    ca: Path
    cert: Path
    key: Path


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise FatalError(
            "the 'openssl' command makes the stack's certificates but is not on "
            "PATH (Debian package openssl)"
        )
    return found


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(
        [_openssl(), *args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise FatalError(f"openssl {args[0]} failed: {done.stderr.strip()[-500:]}")


_EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def issue(
    folder: Path,
    name: str = "server",
    subject: str = "/CN=localhost",
    usage: str = "serverAuth",
) -> Certs:
    """The CA of ``folder`` and a certificate ``<name>.crt`` it signed, for
    ``127.0.0.1``, ``::1`` and ``localhost``, of ``subject`` and the extended
    key ``usage`` (``serverAuth``, ``clientAuth`` or both, comma-separated);
    each made once (P-256 keys: quick handshakes), the keys readable by
    their owner alone.

    Safe to call from services starting together (threads of one ``stack
    up``, or two commands): the making happens under an exclusive lock on
    ``folder``, so every caller gets the same CA and a key that fits its
    certificate.
    """
    folder.mkdir(parents=True, exist_ok=True)
    certs = Certs(folder / "ca.crt", folder / f"{name}.crt", folder / f"{name}.key")
    # flock excludes other open files of the lock, in this process too
    with (folder / ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _make(folder, certs, subject, usage)
    return certs


def _make(folder: Path, certs: Certs, subject: str, usage: str) -> None:
    """The CA of ``folder`` and ``certs`` where they are missing (called
    under ``folder``'s lock)."""
    if not certs.ca.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            work = Path(tmp)
            _run(
                [
                    "req", "-x509", *_EC, "-days", "3650",
                    "-keyout", "ca.key", "-out", "ca.crt",
                    "-subj", "/CN=readside local stack CA",
                    "-addext", "basicConstraints=critical,CA:TRUE",
                    "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                ],
                work,
            )  # fmt: skip
            (work / "ca.key").chmod(0o600)
            (work / "ca.key").rename(folder / "ca.key")
            (work / "ca.crt").rename(certs.ca)
    if not certs.cert.exists():
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            work = Path(tmp)
            (work / "ext.cnf").write_text(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\n"
                "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\n"
            )
            _run(
                [
                    "req", *_EC, "-keyout", "k.pem", "-out", "req.csr",
                    "-subj", subject,
                ],
                work,
            )  # fmt: skip
            _run(
                [
                    "x509", "-req", "-in", "req.csr", "-days", "825",
                    "-CA", str(certs.ca), "-CAkey", str(folder / "ca.key"),
                    "-set_serial", str(secrets.randbits(63)),
                    "-extfile", "ext.cnf", "-out", "c.pem",
                ],
                work,
            )  # fmt: skip
            (work / "k.pem").chmod(0o600)
            (work / "k.pem").rename(certs.key)
            (work / "c.pem").rename(certs.cert)


def stack_certs(data: Path) -> Certs:
    """The stack's CA and server certificate (made by the first call)."""
    return issue(data / TLS_DIR)


def write_private(path: Path, text: str) -> None:
    """``text`` in ``path``, readable by its owner alone, also where an older
    start left the file more open."""
    path.touch(mode=0o600)
    path.chmod(0o600)
    path.write_text(text)


def secret_file(path: Path, username: str) -> dict[str, str]:
    """``{"username", "password"}`` kept in ``path`` (0600), made once with a
    random password; a reader never sees the file half written, and of two
    callers making it at once, both get the one that was kept."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        user = {"username": username, "password": secrets.token_urlsafe(18)}
        with tempfile.NamedTemporaryFile(
            "w", dir=path.parent, prefix=f".{path.name}.", delete=False
        ) as tmp:  # made 0600
            tmp.write(json.dumps(user) + "\n")
        try:
            os.link(tmp.name, path)  # fails where another caller made it first
        except FileExistsError:
            pass
        finally:
            os.unlink(tmp.name)
    kept: dict[str, str] = json.loads(path.read_text())
    return kept


# -- PostgreSQL --------------------------------------------------------------


#: the clusters' superuser and where its password is kept (in its cluster's folder)
SUPERUSER = "postgres"
SUPERUSER_CLIENT = "superuser.json"


def superuser(pgdata: Path) -> dict[str, str]:
    """The superuser's name and password (made once, in the cluster's folder)."""
    return secret_file(pgdata / SUPERUSER_CLIENT, SUPERUSER)


def passwords_on_tcp(original: str) -> str:
    """``pg_hba.conf`` text with every TCP rule that trusts (``initdb
    --auth=trust`` writes them for loopback, replication too) asking for a
    SCRAM password instead, in place, so the order of the rules is kept.

    The unix-socket rules stay ``trust``: the socket is in the cluster's own
    folder (0700, the service user's), which no other user of the machine
    can enter, and the stack sets the superuser's password through it."""
    out = []
    for line in original.splitlines():
        rule, sep, comment = line.partition("#")
        fields = rule.split()
        if fields and fields[0].startswith("host") and fields[-1] == "trust":
            rule = rule[: rule.rindex("trust")] + "scram-sha-256 "
            line = (rule + sep + comment) if sep else rule.rstrip()
        out.append(line)
    return "\n".join(out) + "\n"


def postgres_user(pgdata: Path) -> dict[str, str]:
    """The TLS role's name and password (made once, in the cluster's folder)."""
    return secret_file(pgdata / POSTGRES_CLIENT, POSTGRES_ROLE)


def postgres_client(data: Path) -> dict[str, str]:
    """The libpq settings of the TLS role: ``user``, ``password``,
    ``sslmode=verify-full`` and ``sslrootcert`` (the stack's CA).

    Raises:
        FileNotFoundError: the stack's PostgreSQL never started with TLS.
    """
    user = json.loads((data / "postgres" / POSTGRES_CLIENT).read_text())
    return {
        "user": user["username"],
        "password": user["password"],
        "sslmode": "verify-full",
        "sslrootcert": str(data / TLS_DIR / "ca.crt"),
    }


#: postgresql.conf lines of the source's TLS, after the cluster's own
POSTGRES_TLS_CONF = (
    "\n# readside local stack: TLS and SCRAM\n"
    "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
    "password_encryption = 'scram-sha-256'\n"
)
_HBA_MARK = "# readside local stack: the TLS role, SCRAM over TLS only"


def postgres_hba(original: str) -> str:
    """``pg_hba.conf`` with the TLS role's rules first (the first matching
    line wins): SCRAM over TLS, refused without TLS; every other rule kept."""
    rules = [
        _HBA_MARK,
        f"hostssl all {POSTGRES_ROLE} 127.0.0.1/32 scram-sha-256",
        f"hostssl replication {POSTGRES_ROLE} 127.0.0.1/32 scram-sha-256",
        f"host all {POSTGRES_ROLE} 0.0.0.0/0 reject",
        f"host replication {POSTGRES_ROLE} 0.0.0.0/0 reject",
        f"local all {POSTGRES_ROLE} reject",
        f"local replication {POSTGRES_ROLE} reject",
        "# end of readside's TLS rules",
    ]
    return hba_first(rules, original)


def hba_first(rules: list[str], original: str) -> str:
    """``pg_hba.conf`` text ``original`` with ``rules`` (a marking comment
    first, another last) ahead of every other line, in place of an earlier
    copy of them: the first matching line wins."""
    lines = original.splitlines()
    if rules[0] in lines:
        start = lines.index(rules[0])
        end = lines.index(rules[-1], start) + 1
        lines = lines[:start] + lines[end:]
    return "\n".join(rules + lines) + "\n"


def secure_postgres(pgdata: Path, data: Path) -> None:
    """TLS on ``pgdata``'s cluster (its copy of the stack's certificate,
    ``ssl = on``, SCRAM password hashes) and the TLS role's rules and
    password file (idempotent; the role itself is made by a running server:
    :func:`postgres_role_sql`)."""
    certs = stack_certs(data)
    for src, dest in ((certs.cert, "server.crt"), (certs.key, "server.key")):
        target = pgdata / dest
        shutil.copyfile(src, target)
        target.chmod(0o600)  # PostgreSQL refuses a key others can read
    conf = pgdata / "postgresql.conf"
    if POSTGRES_TLS_CONF.strip() not in conf.read_text():
        with conf.open("a") as f:
            f.write(POSTGRES_TLS_CONF)
    hba = pgdata / "pg_hba.conf"
    hba.write_text(postgres_hba(hba.read_text()))
    postgres_user(pgdata)


def make_postgres_role(dsn: str, pgdata: Path) -> None:
    """Make (or bring up to date) the TLS role on the running server of
    ``dsn`` (a superuser): it logs in and replicates, and its password, from
    ``pgdata``'s file, is kept as a SCRAM hash."""
    make_role(dsn, postgres_user(pgdata), "LOGIN REPLICATION NOSUPERUSER")


def make_role(dsn: str, user: dict[str, str], attributes: str, *grants: str) -> None:
    """Make (or bring up to date) the role of ``user`` (``username``,
    ``password``, kept as a SCRAM hash) on the running server of ``dsn`` (a
    superuser), with ``attributes`` and the ``grants`` (``GRANT ... TO``
    the role: SQL written by the stack, not from input)."""
    import psycopg
    from psycopg import sql

    role = sql.Identifier(user["username"])
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        try:
            conn.execute(sql.SQL("CREATE ROLE {}").format(role))
        except psycopg.errors.DuplicateObject:
            pass
        conn.execute(
            sql.SQL("ALTER ROLE {} WITH " + attributes + " PASSWORD {}").format(
                role, sql.Literal(user["password"])
            )
        )
        for grant in grants:
            conn.execute(sql.SQL("GRANT " + grant + " TO {}").format(role))
