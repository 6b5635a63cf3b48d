"""The local stack's certificates, PostgreSQL's TLS and SCRAM rules,
Redis's TLS port and ACL user and FerretDB's TLS listener, as ``prepare``
and ``command`` write them (no server started)."""

from __future__ import annotations

import hashlib
import json
import ssl
import stat
from pathlib import Path

import pytest

from pipeline.config import StackConfig
from pipeline.stack import tls
from pipeline.stack.ferretdb import (
    ANONYMOUS_ROLE,
    MONGO_CLIENT,
    MONGO_ROLE,
    FerretBackend,
    FerretDB,
    backend_hba,
    ferretdb_client,
    ferretdb_tls_client,
)
from pipeline.stack.postgres import Postgres
from pipeline.stack.provision import Installed
from pipeline.stack.redis_server import Redis, redis_admin, redis_client
from pipeline.stack.services import Context

pytestmark = pytest.mark.unit


def ctx(tmp_path: Path) -> Context:
    nowhere = tmp_path / "none"
    return Context(
        cfg=StackConfig(redis_tls_port=26380, ferretdb_tls_port=27029),
        data=tmp_path,
        installed=Installed(*[nowhere] * 7),
    )


def test_issue_makes_a_ca_and_a_server_certificate_it_signed(tmp_path: Path) -> None:
    certs = tls.issue(tmp_path / "tls")
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.cert, certs.key)  # the key fits the certificate
    client = ssl.create_default_context(cafile=str(certs.ca))
    assert client.get_ca_certs()[0]["subject"] == (
        (("commonName", "readside local stack CA"),),
    )
    for key in (certs.key, tmp_path / "tls" / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    sans = ssl._ssl._test_decode_cert(str(certs.cert))["subjectAltName"]  # type: ignore[attr-defined] # the stdlib's own decoder
    assert ("IP Address", "127.0.0.1") in sans
    assert ("DNS", "localhost") in sans


def test_issue_made_once_kept(tmp_path: Path) -> None:
    first = tls.issue(tmp_path)
    before = [p.read_bytes() for p in (first.ca, first.cert, first.key)]
    again = tls.issue(tmp_path)
    assert [p.read_bytes() for p in (again.ca, again.cert, again.key)] == before


def test_postgres_hba_rules_first_once_every_other_rule_kept() -> None:
    original = "local all all trust\nhost all all 127.0.0.1/32 trust\n"
    once = tls.postgres_hba(original)
    twice = tls.postgres_hba(once)
    assert once == twice
    lines = once.splitlines()
    rules = [ln for ln in lines if ln and not ln.startswith("#")]
    assert rules[:2] == [
        "hostssl all readside_tls 127.0.0.1/32 scram-sha-256",
        "hostssl replication readside_tls 127.0.0.1/32 scram-sha-256",
    ]
    # without TLS the role matches a reject before any trust rule
    assert rules.index("host all readside_tls 0.0.0.0/0 reject") < rules.index(
        "host all all 127.0.0.1/32 trust"
    )
    assert once.endswith(original)


def test_postgres_prepare_turns_tls_on_once_for_the_source_only(
    tmp_path: Path,
) -> None:
    c = ctx(tmp_path)
    for svc in (Postgres(c), FerretBackend(c)):
        pgdata = c.dir(svc.name)
        pgdata.mkdir()
        (pgdata / "PG_VERSION").write_text("15\n")  # an existing cluster
        (pgdata / "postgresql.conf").write_text("port = 1\n")
        (pgdata / "pg_hba.conf").write_text("host all all 127.0.0.1/32 trust\n")
        svc.prepare()
        svc.prepare()
    source = c.dir("postgres")
    conf = (source / "postgresql.conf").read_text()
    assert conf.count("ssl = on") == 1
    assert "password_encryption = 'scram-sha-256'" in conf
    assert (source / "server.crt").read_bytes() == (
        tmp_path / "tls/server.crt"
    ).read_bytes()
    assert stat.S_IMODE((source / "server.key").stat().st_mode) == 0o600
    user = tls.postgres_client(tmp_path)
    assert user["user"] == "readside_tls"
    assert user["sslmode"] == "verify-full"
    assert user["sslrootcert"] == str(tmp_path / "tls" / "ca.crt")
    assert stat.S_IMODE((source / tls.POSTGRES_CLIENT).stat().st_mode) == 0o600
    assert tls.postgres_client(tmp_path)["password"] == user["password"]  # kept
    backend = c.dir("ferretdb_backend")
    assert "ssl" not in (backend / "postgresql.conf").read_text()
    hba = (backend / "pg_hba.conf").read_text()
    assert "readside_tls" not in hba
    # the MongoDB roles: the anonymous one refused, then the MongoDB role's
    # password checked, the old rules after, once
    assert hba.splitlines()[3] == f"host all {MONGO_ROLE} 127.0.0.1/32 scram-sha-256"
    assert hba.count(MONGO_ROLE) == 3
    assert hba.count(ANONYMOUS_ROLE) == 2
    # the cluster's own loopback rule asks for a password now, in its place
    assert hba.rstrip().endswith("host all all 127.0.0.1/32 scram-sha-256")
    assert "trust" not in (source / "pg_hba.conf").read_text()
    for pgdata in (source, backend):  # each superuser's password, kept
        su = json.loads((pgdata / tls.SUPERUSER_CLIENT).read_text())
        assert su["username"] == "postgres"
        assert len(su["password"]) >= 20
        assert stat.S_IMODE((pgdata / tls.SUPERUSER_CLIENT).stat().st_mode) == 0o600
    assert (backend / "postgresql.conf").read_text().count("max_connections") == 1
    uri = ferretdb_client(tmp_path, 27027)
    assert uri.startswith(f"mongodb://{MONGO_ROLE}:")
    assert uri.endswith("@127.0.0.1:27027/?authMechanism=PLAIN")
    assert stat.S_IMODE((backend / "mongo-client.json").stat().st_mode) == 0o600


def test_redis_tls_port_acl_users_and_no_default_user(tmp_path: Path) -> None:
    svc = Redis(ctx(tmp_path))
    svc.prepare()
    assert svc.ports == [16379, 26380]
    cmd = svc.command()
    args = dict(zip(cmd[1::2], cmd[2::2], strict=False))
    assert args["--tls-port"] == "26380"
    assert args["--port"] == "16379"
    assert args["--tls-cert-file"] == str(tmp_path / "tls" / "server.crt")
    assert args["--tls-auth-clients"] == "no"
    client = redis_client(tmp_path, 26380)
    assert client["url"] == "rediss://127.0.0.1:26380/0"
    assert client["ca_cert"] == str(tmp_path / "tls" / "ca.crt")
    acl = Path(args["--aclfile"]).read_text()
    digest = hashlib.sha256(client["password"].encode()).hexdigest()
    # off, and no password to log in with; every permission, for Redis to
    # replay the transactions of its append-only file (test_redis_acl_aof)
    assert acl.startswith("user default off ~* &* +@all\n")
    assert "nopass" not in acl
    assert f"user readside on #{digest} ~* &* +@all -@dangerous " in acl
    admin = redis_admin(tmp_path, 16379)
    assert admin["url"] == "redis://127.0.0.1:16379/0"
    admin_digest = hashlib.sha256(admin["password"].encode()).hexdigest()
    assert f"user readside-admin on #{admin_digest} ~* &* +@all\n" in acl
    assert admin["password"] != client["password"]
    for password in (client["password"], admin["password"]):
        assert password not in acl
    assert stat.S_IMODE(Path(args["--aclfile"]).stat().st_mode) == 0o600
    svc.prepare()
    assert redis_client(tmp_path, 26380) == client  # the passwords are kept
    assert redis_admin(tmp_path, 16379) == admin


def test_ferretdb_tls_listener_beside_the_plain_one(tmp_path: Path) -> None:
    svc = FerretDB(ctx(tmp_path))
    svc.prepare()
    assert svc.ports == [27027, 27029]
    args = dict(a.split("=", 1) for a in svc.command()[1:])
    assert args["--listen-addr"] == "127.0.0.1:27027"
    assert args["--listen-tls"] == "127.0.0.1:27029"
    assert args["--listen-tls-cert-file"] == str(tmp_path / "tls" / "server.crt")
    assert args["--listen-tls-key-file"] == str(tmp_path / "tls" / "server.key")
    assert "--listen-tls-ca-file" not in args  # no client certificate asked
    tls.secret_file(tmp_path / FerretBackend.name / MONGO_CLIENT, MONGO_ROLE)
    uri = ferretdb_tls_client(tmp_path, 27029)
    plain, query = uri.split("?", 1)
    assert plain == ferretdb_client(tmp_path, 27029).split("?", 1)[0]
    ca = tmp_path / "tls" / "ca.crt"
    assert query == f"authMechanism=PLAIN&tls=true&tlsCAFile={ca}"


def test_ferretdb_clients_that_do_not_log_in_work_as_a_refused_role() -> None:
    svc = FerretDB(ctx(Path("/nowhere")))
    args = dict(a.split("=", 1) for a in svc.command()[1:])
    url = args["--postgresql-url"]
    assert url.startswith(f"postgresql://{ANONYMOUS_ROLE}@127.0.0.1:15433/"), url
    hba = backend_hba("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    rules = [line.split() for line in hba.splitlines() if line and line[0] != "#"]
    # the first line that matches the role wins: for the anonymous role, a
    # reject, over TCP and over the socket alike, before any trust line
    first = {
        kind: next(r for r in rules if r[0] == kind and r[2] in (ANONYMOUS_ROLE, "all"))
        for kind in ("host", "local")
    }
    assert first["host"] == ["host", "all", ANONYMOUS_ROLE, "0.0.0.0/0", "reject"]
    assert first["local"] == ["local", "all", ANONYMOUS_ROLE, "reject"]


def test_services_starting_together_get_one_matching_pair(tmp_path: Path) -> None:
    # `stack up` starts services in threads of their own, and each one asks
    # for the stack's certificates as it prepares: every caller must get the
    # same CA and a key that fits the certificate the CA signed.
    import shutil
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: tls.stack_certs(tmp_path), range(8)))
    assert len(set(got)) == 1
    certs = got[0]
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(certs.cert, certs.key)  # the key fits the certificate
    openssl = shutil.which("openssl")
    assert openssl is not None
    verified = subprocess.run(
        [openssl, "verify", "-CAfile", str(certs.ca), str(certs.cert)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verified.returncode == 0, verified.stderr + verified.stdout
    assert not [p.name for p in (tmp_path / tls.TLS_DIR).iterdir() if p.is_dir()]


def test_secret_file_made_at_once_by_several_callers_is_one(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = tmp_path / "svc" / "client.json"
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda _: tls.secret_file(path, "someone"), range(8)))
    assert all(user == got[0] for user in got)
    assert json.loads(path.read_text()) == got[0]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["client.json"]
