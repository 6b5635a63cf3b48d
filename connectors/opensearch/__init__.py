"""The OpenSearch store: the Elasticsearch store's sink on OpenSearch.

OpenSearch keeps the REST API the Elasticsearch sink relies on (bulk with
external versions, aliases, ``mget``, searches), so ``type: opensearch`` is
the same sink (:mod:`connectors.elasticsearch`: one index per view behind an
alias, external versions, tombstones, generations for rebuilds, per-item
errors, mappings derived from the view's source column types) with its
requests sent through opensearch-py (:mod:`connectors.opensearch.client`)
instead of elasticsearch-py, which refuses servers other than Elasticsearch.
Its settings are the Elasticsearch sink's, with the local stack's OpenSearch
node (``readside stack up --with opensearch``, HTTPS) as the default host.
Tested against OpenSearch 2.19.4 with its security plugin.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from connectors.base import SinkKind
from connectors.elasticsearch import ElasticsearchSinkConfig


class OpenSearchSinkConfig(ElasticsearchSinkConfig):
    type: Literal["opensearch"]  # type: ignore[assignment]
    hosts: list[str] = Field(default_factory=lambda: ["https://127.0.0.1:19201"])


KIND: SinkKind[OpenSearchSinkConfig] = SinkKind(
    "opensearch",
    OpenSearchSinkConfig,
    "connectors.opensearch.sink:OpenSearchSink",
)
