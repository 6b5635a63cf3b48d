"""The stack's Redis: the plain port everything uses, TLS on a second one,
and an ACL user beside the open ``default`` one (:mod:`pipeline.stack.tls`)."""

from __future__ import annotations

from pipeline.stack import tls
from pipeline.stack.services import Service, port_in_use


class Redis(Service):
    """Redis on two ports: the plain one everything uses, and TLS on
    ``stack.redis_tls_port`` with the stack's certificate (no client
    certificate asked). Beside the ``default`` user, as open as before, one
    ACL user (:func:`pipeline.stack.tls.redis_client`)."""

    name = "redis"

    @property
    def ports(self) -> list[int]:
        return [self.port, self.ctx.cfg.redis_tls_port]

    def prepare(self) -> None:
        super().prepare()
        tls.redis_acl(self.ctx.dir(self.name))
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
            "--aclfile", str(d / tls.REDIS_ACL),
            "--tls-port", str(self.ctx.cfg.redis_tls_port),
            "--tls-cert-file", str(certs.cert),
            "--tls-key-file", str(certs.key),
            "--tls-ca-cert-file", str(certs.ca),
            "--tls-auth-clients", "no",
        ]  # fmt: skip

    def probe(self) -> str | None:
        """``PING`` on the plain port, then as the ACL user over TLS (from
        another directory, which has no credentials, only that the TLS port
        answers)."""
        import redis

        try:
            client = redis.Redis(port=self.port, socket_timeout=2)
            ok = client.ping()
            client.close()
        except redis.RedisError as exc:
            return f"ping failed: {exc.__class__.__name__}"
        if not ok:
            return "ping returned false"
        tport = self.ctx.cfg.redis_tls_port
        if not port_in_use(tport):
            return f"TLS port {tport} closed: restart redis"
        try:
            user = tls.redis_client(self.ctx.data, tport)
        except FileNotFoundError:
            return None
        try:
            client = redis.Redis.from_url(
                user["url"],
                username=user["username"],
                password=user["password"],
                ssl_ca_certs=user["ca_cert"],
                socket_timeout=2,
            )
            client.ping()
            client.close()
        except redis.RedisError as exc:
            return f"TLS port {tport} as {user['username']}: {exc}"
        return None
