"""Keycloak: the local stack's OpenID Connect server, which the schema
registry asks who a client is.

Apicurio Registry 2.x authenticates only through OIDC. Its HTTP basic mode
(``CLIENT_CREDENTIALS_BASIC_AUTH_ENABLED``) takes a client id and secret as
basic credentials and trades them for a client-credentials token at the
OIDC server, so every client of the registry (Connect's converter, the
worker, the bench) logs in with a plain user and password while the
registry checks them here.

Maven Central serves Keycloak's server distribution
(``org.keycloak:keycloak-quarkus-dist``). ``provision`` unpacks it into the
cache and runs its build step once (``kc.sh build``: the database kind and
the health endpoints are build-time options), so that each start is
``kc.sh start --optimized``, which writes nothing into the cache: the
server runs as the unprivileged service user, its H2 database under the
stack's data directory. Keycloak needs Java 21 or newer
(:func:`java21_home`).

After each start, :meth:`Keycloak.ready` makes (or brings back to what it
should be) the realm :data:`REALM` the registry trusts, with:

* the registry's roles (``sr-admin``, ``sr-developer``, ``sr-readonly``);
  the registry runs with role-based authorization on;
* the client ``registry-api``, whose id the registry checks tokens against;
* two confidential clients with service accounts, their secrets random and
  kept 0600 here: :data:`CONNECT_CLIENT` (``sr-developer``: the connector's
  converter registers schemas) and :data:`WORKER_CLIENT` (``sr-readonly``:
  the worker, ``snapshot`` and ``dlq replay`` only read them).

It logs in to its own admin API as a bootstrap service account (a client of
the ``master`` realm, its secret also kept here), never as a user with a
password.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from pipeline.errors import FatalError
from pipeline.stack import tls
from pipeline.stack.probes import refuses_anonymous
from pipeline.stack.provision import _maven_unzip, _run
from pipeline.stack.services import (
    Service,
    as_service_user,
    cache_dir,
    chown_service_user,
)

KEYCLOAK_VERSION = "26.7.3"
#: the realm the registry trusts
REALM = "readside"
#: the client id the registry validates tokens for (``KEYCLOAK_API_CLIENT_ID``)
API_CLIENT = "registry-api"
CONNECT_CLIENT = "readside-connect"
WORKER_CLIENT = "readside-worker"
#: each confidential client, the registry role it holds and the file (in the
#: service's folder) keeping its id and secret as ``username``/``password``
CLIENTS = {
    CONNECT_CLIENT: ("sr-developer", "registry-connect.json"),
    WORKER_CLIENT: ("sr-readonly", "registry-worker.json"),
}
ROLES = ("sr-admin", "sr-developer", "sr-readonly")
ADMIN_FILE = "admin-client.json"
ADMIN_CLIENT = "readside-admin"
#: the options ``kc.sh build`` fixes (``start --optimized`` needs the same)
BUILD_OPTIONS = ("--db=dev-file", "--health-enabled=true")
JVM_ROOT = Path("/usr/lib/jvm")


def client_login(data: Path, client: str) -> tuple[str, str] | None:
    """``client``'s id and secret as the stack with data directory ``data``
    keeps them; ``None`` when it keeps none (no Keycloak started there)."""
    path = data / Keycloak.name / CLIENTS[client][1]
    if not path.exists():
        return None
    kept = json.loads(path.read_text())
    return str(kept["username"]), str(kept["password"])


def home(cache: Path) -> Path:
    return cache / f"keycloak-{KEYCLOAK_VERSION}"


def _major(java_home: Path) -> int:
    """The Java major version of a JDK or JRE home (0 when unknown)."""
    try:
        text = (java_home / "release").read_text()
    except OSError:
        return 0
    found = re.search(r'^JAVA_VERSION="(\d+)', text, re.M)
    return int(found.group(1)) if found else 0


def java21_home() -> Path:
    """A Java home of version 21 or newer: ``$JAVA_HOME`` if it is one, else
    the newest under ``/usr/lib/jvm``.

    Raises:
        FatalError: there is none.
    """
    candidates = [Path(os.environ["JAVA_HOME"])] if os.environ.get("JAVA_HOME") else []
    if JVM_ROOT.is_dir():
        candidates += sorted(JVM_ROOT.iterdir(), key=_major, reverse=True)
    for java_home in candidates:
        if _major(java_home) >= 21 and (java_home / "bin" / "java").exists():
            return java_home
    raise FatalError(
        f"Keycloak {KEYCLOAK_VERSION} (the schema registry's login server) needs "
        f"Java 21 or newer: none in $JAVA_HOME or {JVM_ROOT}; install one there "
        "(or set JAVA_HOME to it)"
    )


def provisioned(cache: Path) -> bool:
    return (home(cache) / ".complete").exists()


def provision(cache: Path, log: Path) -> Path:
    """Unpack the distribution and run its build step once; idempotent."""
    dest = home(cache)
    if (dest / ".complete").exists():
        return dest
    art = f"org.keycloak:keycloak-quarkus-dist:{KEYCLOAK_VERSION}:zip"
    _maven_unzip(art, dest, f"keycloak-{KEYCLOAK_VERSION}", log)
    (dest / "bin" / "kc.sh").chmod(0o755)
    env = dict(os.environ, JAVA_HOME=str(java21_home()))
    _run([str(dest / "bin" / "kc.sh"), "build", *BUILD_OPTIONS], log, env=env)
    subprocess.run(["chmod", "-R", "a+rX", str(dest)], check=True)
    (dest / ".complete").touch()
    return dest


class Keycloak(Service):
    """The OIDC server of the schema registry; HTTP on ``keycloak_port``,
    its health endpoints on the management port one above, both on
    loopback."""

    name = "keycloak"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.port + 1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def prepare(self) -> None:
        base = self.ctx.dir(self.name)
        (base / "db").mkdir(parents=True, exist_ok=True)
        chown_service_user(base / "db")
        tls.secret_file(base / ADMIN_FILE, ADMIN_CLIENT)
        for client, (_, file) in CLIENTS.items():
            tls.secret_file(base / file, client)

    def command(self) -> list[str]:
        db = self.ctx.dir(self.name) / "db" / "keycloak"
        kc = home(cache_dir(self.ctx.cfg)) / "bin" / "kc.sh"
        return [
            *as_service_user([str(kc)]),
            "start",
            "--optimized",
            "--http-enabled=true",
            "--http-host=127.0.0.1",
            f"--http-port={self.port}",
            f"--http-management-port={self.port + 1}",
            "--hostname-strict=false",
            # one node, no cluster: with Keycloak's default (``ispn``, its
            # nodes found through its database) a start after a stop sent ten
            # joins, 2 s apart, to the node of the run before, whose entry
            # its shutdown had failed to remove: 20 s of a restart
            "--cache=local",
            f"--db-url=jdbc:h2:file:{db};NON_KEYWORDS=VALUE",
        ]

    def env(self) -> dict[str, str]:
        admin = tls.secret_file(self.ctx.dir(self.name) / ADMIN_FILE, ADMIN_CLIENT)
        env = super().env()
        # The transaction manager's object store, by default ./ObjectStore
        # in the working directory (the stack's data directory, which the
        # service user cannot write): each of its three recovery modules
        # failed to start after 10 s, 30 s of every start.
        store = self.ctx.dir(self.name) / "db" / "ObjectStore"
        env |= {
            "JAVA_HOME": str(java21_home()),
            "JAVA_OPTS_KC_HEAP": "-Xms64m -Xmx512m",
            "JAVA_OPTS_APPEND": (
                f"-Dquarkus.transaction-manager.object-store.directory={store}"
            ),
            # made at the first start only, when the master realm is empty
            "KC_BOOTSTRAP_ADMIN_CLIENT_ID": admin["username"],
            "KC_BOOTSTRAP_ADMIN_CLIENT_SECRET": admin["password"],
        }
        return env

    def probe(self) -> str | None:
        """Ready on the management port, and the admin API refuses a request
        without a token."""
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.port + 1}/health/ready", timeout=3
            ) as resp:
                if resp.status != 200:
                    return f"readiness HTTP {resp.status}"
        except urllib.error.HTTPError as exc:
            with exc:
                return f"not ready (HTTP {exc.code})"
        except OSError as exc:
            return f"readiness probe failed: {exc.__class__.__name__}"
        return refuses_anonymous(f"{self.url}/admin/realms", "admin API", self.name)

    def ready(self) -> None:
        """The realm, roles and clients, as :mod:`pipeline.stack.keycloak`
        says; idempotent (a client's secret is set again to the kept one).

        Raises:
            FatalError: Keycloak refused the kept admin client (its database
                outlived the file), or a step failed.
        """
        base = self.ctx.dir(self.name)
        admin = tls.secret_file(base / ADMIN_FILE, ADMIN_CLIENT)
        try:
            token = _call(
                f"{self.url}/realms/master/protocol/openid-connect/token",
                form={
                    "grant_type": "client_credentials",
                    "client_id": admin["username"],
                    "client_secret": admin["password"],
                },
            )["access_token"]
        except urllib.error.HTTPError as exc:
            with exc:
                raise FatalError(
                    f"keycloak refused the admin client kept in {base / ADMIN_FILE} "
                    f"(HTTP {exc.code}): its database {base / 'db'} was made with "
                    "another; `readside stack down`, remove that folder, then "
                    "`readside stack up` makes both anew"
                ) from exc
        try:
            self._realm(base, _Admin(f"{self.url}/admin/realms", token))
        except (urllib.error.URLError, KeyError, ValueError) as exc:
            raise FatalError(f"keycloak: making realm {REALM} failed: {exc}") from exc

    def _realm(self, base: Path, api: _Admin) -> None:
        if api.get(f"/{REALM}") is None:
            api.send("POST", "", {"realm": REALM, "enabled": True})
        for role in ROLES:
            if api.get(f"/{REALM}/roles/{role}") is None:
                api.send("POST", f"/{REALM}/roles", {"name": role})
        api.client({"clientId": API_CLIENT, "enabled": True, "bearerOnly": True})
        for client, (role, file) in CLIENTS.items():
            secret = tls.secret_file(base / file, client)["password"]
            uuid = api.client(
                {
                    "clientId": client,
                    "enabled": True,
                    "publicClient": False,
                    "secret": secret,
                    "serviceAccountsEnabled": True,
                    "standardFlowEnabled": False,
                    "directAccessGrantsEnabled": False,
                }
            )
            user = api.get(f"/{REALM}/clients/{uuid}/service-account-user")
            if user is None:
                raise KeyError(f"client {client} has no service-account user")
            mapping = api.get(f"/{REALM}/roles/{role}")
            api.send(
                "POST", f"/{REALM}/users/{user['id']}/role-mappings/realm", [mapping]
            )


def _call(
    url: str,
    body: Any = None,
    form: dict[str, str] | None = None,
    method: str | None = None,
    token: str | None = None,
) -> Any:
    """One request to Keycloak; its JSON answer (``None`` when empty)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    elif body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method=method)  # noqa: S310
    with urllib.request.urlopen(req, timeout=30) as resp:  # noqa: S310 (loopback)
        text = resp.read()
    return json.loads(text) if text else None


class _Admin:
    """Keycloak's admin REST API under ``/admin/realms``, as one token."""

    def __init__(self, base: str, token: str) -> None:
        self.base = base
        self.token = token

    def get(self, path: str) -> Any:
        """The resource, or ``None`` when there is none (404)."""
        try:
            return _call(self.base + path, token=self.token)
        except urllib.error.HTTPError as exc:
            with exc:
                if exc.code == 404:
                    return None
                raise

    def send(self, method: str, path: str, body: Any) -> None:
        _call(self.base + path, body=body, method=method, token=self.token)

    def client(self, rep: dict[str, Any]) -> str:
        """Create the client ``rep`` names, or update it to ``rep``; its id."""
        path = f"/{REALM}/clients"
        query = urllib.parse.urlencode({"clientId": rep["clientId"]})
        found = self.get(f"{path}?{query}") or []
        if found:
            self.send("PUT", f"{path}/{found[0]['id']}", {**found[0], **rep})
        else:
            self.send("POST", path, rep)
            found = self.get(f"{path}?{query}")
        return str(found[0]["id"])


def secure_registry_env(port: int) -> dict[str, str]:
    """The schema registry's settings that make it ask this server: every
    request authenticated (basic credentials traded for a token), roles from
    the token."""
    return {
        "AUTH_ENABLED": "true",
        "KEYCLOAK_URL": f"http://127.0.0.1:{port}",
        "KEYCLOAK_REALM": REALM,
        "KEYCLOAK_API_CLIENT_ID": API_CLIENT,
        "CLIENT_CREDENTIALS_BASIC_AUTH_ENABLED": "true",
        "ROLE_BASED_AUTHZ_ENABLED": "true",
    }
