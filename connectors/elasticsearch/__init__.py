"""The Elasticsearch store: one index per view behind an alias.

The whole store is this package: its settings
(:class:`ElasticsearchSinkConfig`, here), its sink
(:mod:`connectors.elasticsearch.sink`, the writes) built on the client and
index names (:mod:`~connectors.elasticsearch.store`), the generations
(:mod:`~connectors.elasticsearch.generations`) and the reads and searches of
sites (:mod:`~connectors.elasticsearch.reads`), routed views
(:mod:`connectors.elasticsearch.routing`), and :data:`KIND`, the sink type
``elasticsearch`` (entry point ``readside.sinks``). The sink, and with it the
driver, is imported only when a sink is built.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from connectors.base import SinkKind
from pipeline.configtypes import ExistingFile
from pipeline.sinktypes import SinkConfig

#: Characters Elasticsearch refuses in an index name.
_INDEX_BAD = set('\\/*?"<>| ,#:')


class ElasticsearchSinkConfig(SinkConfig):
    """A search cluster. ``username`` and ``password`` log in with HTTP
    basic authentication; over ``https://`` hosts the client verifies the
    server's certificate and host name against ``ca_cert`` (default: the
    system's CAs) unless ``verify`` is false, which the sink logs as a
    warning when it connects. Both are refused when no host is ``https://``.
    """

    type: Literal["elasticsearch"]
    hosts: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:19200"])
    username: str | None = None
    password: SecretStr | None = None
    ca_cert: ExistingFile | None = None
    verify: bool = True
    timeout_s: float = Field(30.0, gt=0)
    index_prefix: str = "readside-"
    refresh: bool = False
    #: copies of each shard (primary included) that must be active before a
    #: bulk writes; ``None`` leaves the index's setting (default 1)
    wait_for_active_shards: Annotated[int, Field(ge=1)] | Literal["all"] | None = None

    @model_validator(mode="after")
    def _tls(self) -> ElasticsearchSinkConfig:
        if not self.secure:
            if self.ca_cert is not None:
                raise ValueError("ca_cert: TLS is off; give https:// hosts")
            if not self.verify:
                raise ValueError("verify: TLS is off; give https:// hosts")
        return self

    @property
    def secure(self) -> bool:
        """Whether a host is reached over TLS (an ``https://`` URL)."""
        return any(h.lower().startswith("https://") for h in self.hosts)

    def target_problem(self, target: str) -> str | None:
        """Index names are lower case, without some characters and starts."""
        if target != target.lower() or _INDEX_BAD & set(target):
            return (
                f"{target!r} is not a valid Elasticsearch index name "
                '(lower case, none of \\ / * ? " < > | , # : or spaces)'
            )
        if target[0] in "-_+.":
            return f"an index name cannot start with {target[0]!r}"
        return None


KIND: SinkKind[ElasticsearchSinkConfig] = SinkKind(
    "elasticsearch",
    ElasticsearchSinkConfig,
    "connectors.elasticsearch.sink:ElasticsearchSink",
)
