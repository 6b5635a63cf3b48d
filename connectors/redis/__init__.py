"""The Redis store: documents as JSON strings, guarded by a Lua script.

The whole store is this package: its settings (:class:`RedisSinkConfig`,
here), its sink (:mod:`connectors.redis.sink`, the writes) built on the
client and key layouts (:mod:`~connectors.redis.store`, with
:mod:`~connectors.redis.keys`), the generations
(:mod:`~connectors.redis.generations`) and the reads and the filters its
indexes answer (:mod:`~connectors.redis.reads`), what it waits for before
acknowledging (:mod:`connectors.redis.wait`), and :data:`KIND`, the sink type ``redis``
(entry point ``readside.sinks``). The sink, and with it the driver, is
imported only when a sink is built, so validating a configuration loads no
driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from connectors.base import SinkKind
from pipeline.configtypes import ExistingFile
from pipeline.sinktypes import SinkConfig

if TYPE_CHECKING:
    import redis
    import redis.asyncio

#: the schemes redis-py's ``from_url`` takes; ``rediss`` is TLS
_SCHEMES = ("redis", "rediss", "unix")


class RedisSinkConfig(SinkConfig):
    """A Redis server. By default a batch is acknowledged once Redis applied it
    in memory; ``wait_aof`` and ``wait_replicas`` make the sink wait, after
    each batch and before the worker may commit, for the append-only file
    fsync (``WAITAOF``, Redis >= 7.2; or the server's ``appendfsync always``)
    and for that many replicas.

    Authentication and TLS: ``username`` and ``password`` log in as an ACL
    user (``AUTH``; the password alone: the ``default`` user's
    ``requirepass``), as one of the URL's own would; ``tls`` (or a
    ``rediss://`` URL) speaks TLS, verifying the server's certificate and
    host name against ``ca_cert`` (default: the system's CAs) unless
    ``verify`` is false; ``client_cert`` and ``client_key`` present a client
    certificate to a server that asks for one (``tls-auth-clients``).
    """

    type: Literal["redis"]
    url: SecretStr = SecretStr("redis://127.0.0.1:16379/0")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool | None = None
    ca_cert: ExistingFile | None = None
    verify: bool = True
    client_cert: ExistingFile | None = None
    client_key: ExistingFile | None = None
    timeout_s: float = Field(5.0, gt=0)
    docs_per_call: int = Field(200, ge=1)
    wait_aof: bool = False
    wait_replicas: int = Field(0, ge=0)
    wait_timeout_ms: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _security(self) -> RedisSinkConfig:
        parts = urlsplit(self.url.get_secret_value())
        if parts.scheme not in _SCHEMES:
            raise ValueError(
                f"url: scheme must be one of {', '.join(_SCHEMES)}, not "
                f"{parts.scheme!r}"
            )
        if self.tls is False and parts.scheme == "rediss":
            raise ValueError("tls: false, but url is rediss:// (TLS)")
        if self.tls and parts.scheme == "unix":
            raise ValueError("tls: not over a unix socket (url is unix://)")
        if self.username is not None and parts.username:
            raise ValueError("username: the url names a user too; give it once")
        if self.password is not None and parts.password:
            raise ValueError("password: the url holds a password too; give it once")
        if self.username is not None and self.password is None and not parts.password:
            raise ValueError("username: an ACL user needs a password")
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key: give both or neither")
        if not self.secure:
            for name in ("ca_cert", "client_cert"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: TLS is off; set tls: true or a rediss:// url"
                    )
            if not self.verify:
                raise ValueError("verify: TLS is off; set tls: true or a rediss:// url")
        return self

    @property
    def secure(self) -> bool:
        """Whether the client speaks TLS (``tls``, else the URL's scheme)."""
        if self.tls is not None:
            return self.tls
        return urlsplit(self.url.get_secret_value()).scheme == "rediss"

    def client_url(self) -> str:
        """The URL to connect to: ``url``, as ``rediss://`` when TLS is on."""
        url = self.url.get_secret_value()
        if self.secure and url.startswith("redis://"):
            return "rediss://" + url.removeprefix("redis://")
        return url

    def client_options(self) -> dict[str, Any]:
        """redis-py's options for these settings, over the URL's own."""
        out: dict[str, Any] = {}
        # (TLS itself is the URL's scheme: see client_url)
        if self.username is not None:
            out["username"] = self.username
        if self.password is not None:
            out["password"] = self.password.get_secret_value()
        if self.secure:
            out["ssl_cert_reqs"] = "required" if self.verify else "none"
            out["ssl_check_hostname"] = self.verify
            if self.ca_cert is not None:
                out["ssl_ca_certs"] = str(self.ca_cert)
            if self.client_cert is not None and self.client_key is not None:
                out["ssl_certfile"] = str(self.client_cert)
                out["ssl_keyfile"] = str(self.client_key)
        return out

    def connect(self, **options: Any) -> redis.Redis:
        """A redis-py client of these settings (URL, user, TLS), with
        ``options`` (timeouts, ``decode_responses`` ...) over them: the one
        way readside, its bench and its tests reach a Redis sink's server."""
        import redis

        return redis.Redis.from_url(
            self.client_url(), **{**self.client_options(), **options}
        )

    def connect_async(self, **options: Any) -> redis.asyncio.Redis:
        """The asyncio twin of :meth:`connect` (same URL, user, TLS), for
        reads on an event loop; bound to the loop that first uses it."""
        import redis.asyncio

        return redis.asyncio.Redis.from_url(
            self.client_url(), **{**self.client_options(), **options}
        )

    def targets_overlap(self, a: str, b: str) -> bool:
        """A view is found by scanning ``prefix:*`` and ``prefix#*``: a prefix
        followed by ``:`` or ``#`` starts another view's key space."""
        pairs = ((a, b), (b, a))
        return a == b or any(x.startswith(y + s) for x, y in pairs for s in ":#")


KIND: SinkKind[RedisSinkConfig] = SinkKind(
    "redis", RedisSinkConfig, "connectors.redis.sink:RedisSink"
)
