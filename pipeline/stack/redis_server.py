"""The stack's Redis: a plain port and a TLS one, and no anonymous client.

Its ACL file turns the ``default`` user off, so a client that does not log
in is answered ``NOAUTH`` to every command, and knows two users, each with a
random password kept in this service's folder (0600) and written to the ACL
file only as its SHA-256:

* :data:`REDIS_USER`, readside's (:func:`redis_client`): every key, every
  command but the dangerous ones;
* :data:`ADMIN_USER`, the stack operator's (:func:`redis_admin`): every
  command, for what an operator does by hand (``CLIENT LIST``,
  ``FLUSHALL``...).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pipeline.stack import tls
from pipeline.stack.services import Service, port_in_use

#: the ACL users of the stack and where their passwords are kept
REDIS_USER = "readside"
REDIS_CLIENT = "acl-client.json"
ADMIN_USER = "readside-admin"
ADMIN_CLIENT = "admin-client.json"
REDIS_ACL = "users.acl"
#: what readside's ACL user may run: every key and channel, every command but
#: the dangerous ones (FLUSHALL, CONFIG SET, DEBUG, SHUTDOWN ...), and the
#: two of them the sink reads its durability settings with
REDIS_RULES = "~* &* +@all -@dangerous +info +config|get"


def _user(data: Path, name: str) -> dict[str, str]:
    user: dict[str, str] = json.loads((data / Redis.name / name).read_text())
    return user


def redis_client(data: Path, tls_port: int) -> dict[str, str]:
    """The Redis sink settings of readside's ACL user over TLS: ``url``
    (``rediss://``), ``username``, ``password`` and ``ca_cert``.

    Raises:
        FileNotFoundError: the stack's Redis never started with its ACL user.
    """
    user = _user(data, REDIS_CLIENT)
    return {
        "url": f"rediss://127.0.0.1:{tls_port}/0",
        "username": user["username"],
        "password": user["password"],
        "ca_cert": str(data / tls.TLS_DIR / "ca.crt"),
    }


def redis_admin(data: Path, port: int) -> dict[str, str]:
    """redis-py's settings of the operator's user on the plain ``port``:
    ``url``, ``username`` and ``password``.

    Raises:
        FileNotFoundError: the stack's Redis never started with that user.
    """
    user = _user(data, ADMIN_CLIENT)
    url = f"redis://127.0.0.1:{port}/0"
    return {"url": url, "username": user["username"], "password": user["password"]}


def redis_acl(folder: Path) -> Path:
    """The ACL file of the stack's Redis: ``default`` off, readside's user
    and the operator's, each password kept only as its SHA-256.

    ``default`` is off (no client is it without logging in, and no one can
    log in as it: it has no password) yet keeps every permission: Redis 7.0
    replays its append-only file as ``default`` and checks the commands of
    each ``MULTI``/``EXEC`` block against its permissions, so a ``default``
    without them makes every transaction of the file refused at load (the
    sink's writes, acknowledged and committed, lost at the next restart;
    ``tests/integration/test_redis_acl_aof.py``)."""
    lines = ["user default off ~* &* +@all"]
    for name, username, rules in (
        (REDIS_CLIENT, REDIS_USER, REDIS_RULES),
        (ADMIN_CLIENT, ADMIN_USER, "~* &* +@all"),
    ):
        user = tls.secret_file(folder / name, username)
        digest = hashlib.sha256(user["password"].encode()).hexdigest()
        lines.append(f"user {user['username']} on #{digest} {rules}")
    path = folder / REDIS_ACL
    tls.write_private(path, "\n".join(lines) + "\n")
    return path


class Redis(Service):
    """Redis on two ports: the plain one, and TLS on ``stack.redis_tls_port``
    with the stack's certificate (no client certificate asked); a client
    logs in on either as on the other (see the module's docstring)."""

    name = "redis"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.ctx.cfg.redis_tls_port]

    def prepare(self) -> None:
        super().prepare()
        redis_acl(self.ctx.dir(self.name))
        tls.stack_certs(self.ctx.data)

    def command(self) -> list[str]:
        certs = tls.stack_certs(self.ctx.data)
        d = self.ctx.dir("redis")
        return [
            str(self.ctx.installed.redis_server),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(d),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "no",
            "--aclfile", str(d / REDIS_ACL),
            "--tls-port", str(self.ctx.cfg.redis_tls_port),
            "--tls-cert-file", str(certs.cert),
            "--tls-key-file", str(certs.key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def probe(self) -> str | None:
        """``PING`` without logging in, which must be refused (a Redis that
        answers it runs an older ACL file: restart it); then as readside's
        user on both ports (from another directory, which has no
        credentials, only that both ports answer)."""
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        # One try each: redis-py retries a timeout three times with backoff,
        # and a port held by something that is not Redis made `stack status`
        # wait 26 s for this probe alone.
        once: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        try:
            with redis.Redis(
                port=self.port, retry=Retry(NoBackoff(), 0), **once
            ) as anonymous:
                anonymous.ping()
            return "answers a client that did not log in: restart redis"
        except redis.AuthenticationError:
            pass  # NOAUTH: the default user is off
        except redis.RedisError as exc:
            return f"ping failed: {exc.__class__.__name__}"
        tport = self.ctx.cfg.redis_tls_port
        if not port_in_use(tport):
            return f"TLS port {tport} closed: restart redis"
        try:
            user = redis_client(self.ctx.data, tport)
        except FileNotFoundError:
            return None
        for where, url, ca in (
            ("", f"redis://127.0.0.1:{self.port}/0", {}),
            (f" on TLS port {tport}", user["url"], {"ssl_ca_certs": user["ca_cert"]}),
        ):
            try:
                with redis.Redis.from_url(
                    url,
                    username=user["username"],
                    password=user["password"],
                    retry=Retry(NoBackoff(), 0),
                    **once,
                    **ca,
                ) as client:
                    client.ping()
            except redis.RedisError as exc:
                return f"ping as {user['username']}{where} failed: {exc}"
        return None
