"""Settings of ``readside serve``: the ``api`` section of the config file.

Part of the config schema (the ground floor, beside :mod:`pipeline.config`,
which holds it as ``Config.api``); the server in :mod:`query` reads it.

Example::

    api:
      host: 127.0.0.1
      port: 8088
      keys:
        - name: storefront
          key: ${STOREFRONT_API_KEY}
          views: [products, orders]
        - name: ops
          key: ${OPS_API_KEY}
          views: ["*"]

With no keys every ``/v1/views`` route is open; with keys, each request
names one (``Authorization: Bearer <key>`` or ``X-Api-Key: <key>``) and may
read only the views it lists. Keys are read-only: the API has no write route.
"""

from __future__ import annotations

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    model_validator,
)

from pipeline.configtypes import ExistingFile


class ApiKey(BaseModel):
    """One API key and the views it may read (``"*"``: all of them).

    Attributes:
        focus: the focus the key reads through (``focuses`` in the config):
            a request for the focus's base view is answered from the focus's
            own stores; any other view is refused with 403. ``views`` is
            checked against the base view.
        operator: the key may read the operators' routes too: ``/status``,
            ``/v1/status``, ``/metrics`` and the stores' errors of
            ``/readyz`` (connector traces and store errors are for them).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    key: SecretStr
    views: list[str] = Field(default_factory=list)
    focus: str | None = None
    operator: bool = False

    @model_validator(mode="after")
    def _long_enough(self) -> ApiKey:
        if len(self.key.get_secret_value()) < 16:
            raise ValueError(f"api key {self.name!r}: key needs 16 characters or more")
        if not self.views and not self.operator:
            raise ValueError(
                f"api key {self.name!r}: give it views, operator: true, or both"
            )
        return self

    def may_read(self, view: str) -> bool:
        return "*" in self.views or view in self.views


class ApiConfig(BaseModel):
    """``readside serve`` settings; every field has a default.

    Attributes:
        host, port: where the server listens.
        keys: API keys. Without any, ``serve`` refuses to start unless
            ``anonymous`` is set.
        anonymous: requests without a key may read every view and the
            operators' routes (for a trusted network only; a key presented
            must still be valid).
        request_timeout_s: the most one store call may take before a 504.
        max_page_size: the largest ``size`` of a search page and ``limit``
            of a filter (at most 1000, the read client's own bound).
        max_ids: the most ids of one multi-get (at most 1000).
        max_body_bytes: the largest request body; a larger one is answered
            413 before it is read whole.
        min_lsn_wait_s: how long a read with ``min_lsn`` waits for the
            view's watermark before answering 412.
        status_interval_s: how often the status page's figures are sampled.
        status_history_s: how much lag history the status page keeps.
        watermark_dsn: the PostgreSQL role the API reads the replication
            slot's position with (default ``source.dsn``): ``LOGIN`` alone
            is enough (``readside connector roles``), so the API need not
            hold a role that reads data or replicates.
        watermark_from_stream: let the read-your-writes watermark also
            follow the last-commit LSNs the workers commit with their
            offsets (docs/design.md, the read-your-writes watermark), so
            it need not wait for Kafka Connect's offset flush. Turn it off
            only if Connect's producer was set to reorder records
            (``producer.override.max.in.flight.requests.per.connection``
            above 1 without idempotence).
        keep_alive_s: how long an idle client connection stays open. Longer
            than the idle timeout of clients and load balancers in front
            (often 60 s): the side that closes first must be the client, or
            a request sent as the server closes is reset mid-flight.
        tls_cert, tls_key: serve HTTPS with this certificate (PEM, the
            chain after the server's own) and its private key; both or
            neither. Without them the API speaks plain HTTP, for a TLS proxy
            or a trusted network in front.
        tls_key_password: the password of an encrypted ``tls_key``.
        workers: server processes sharing the port (``readside serve
            --workers``): one process answers on one core, so a host with
            cores to spare runs one per core. Each holds its own store
            clients and watermark sampler; ``/metrics`` sums the requests of
            all of them.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"
    port: int = Field(8088, ge=0, le=65535)
    keys: list[ApiKey] = Field(default_factory=list)
    anonymous: bool = False
    request_timeout_s: float = Field(10.0, gt=0)
    max_page_size: int = Field(100, ge=1, le=1000)
    max_ids: int = Field(1000, ge=1, le=1000)
    max_body_bytes: int = Field(1 << 20, ge=1024)
    min_lsn_wait_s: float = Field(5.0, gt=0, le=60)
    status_interval_s: float = Field(2.0, gt=0)
    status_history_s: int = Field(600, ge=10)
    keep_alive_s: int = Field(75, ge=1)
    watermark_dsn: SecretStr | None = None
    watermark_from_stream: bool = True
    tls_cert: ExistingFile | None = None
    tls_key: ExistingFile | None = None
    tls_key_password: SecretStr | None = None
    workers: int = Field(1, ge=1, le=64)

    @model_validator(mode="after")
    def _tls_pair(self) -> ApiConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both or neither")
        if self.tls_key_password is not None and self.tls_key is None:
            raise ValueError("tls_key_password: there is no tls_key")
        return self

    @property
    def tls(self) -> bool:
        """Whether ``serve`` speaks HTTPS."""
        return self.tls_cert is not None

    @model_validator(mode="after")
    def _unique_keys(self) -> ApiConfig:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("api.keys: key names must be unique")
        secrets = [k.key.get_secret_value() for k in self.keys]
        if len(set(secrets)) != len(secrets):
            raise ValueError("api.keys: two keys have the same secret")
        return self
