"""OpenSearch sink: the Elasticsearch sink with an OpenSearch client.

Every write, read, generation and error rule is
:class:`~connectors.elasticsearch.sink.ElasticsearchSink`'s; this class only
builds its client (:class:`~connectors.opensearch.client.OpenSearchClient`)
and names OpenSearch's field type for flattened objects: ``flat_object``
where Elasticsearch has ``flattened`` (hstore columns, ``json: flattened``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, cast

import elasticsearch

from connectors.base import ViewTarget
from connectors.elasticsearch.sink import ElasticsearchSink
from connectors.elasticsearch.store import classify, tls_options
from connectors.opensearch.client import OpenSearchClient
from pipeline.errors import ReadsideError


def flat_objects(mapping: Any) -> Any:
    """``mapping`` with each ``"type": "flattened"`` named ``flat_object``.

    ``flat_object`` takes no parameter: ``ignore_above`` goes, and OpenSearch
    refuses a document with a leaf value over 32,766 bytes (a dead letter
    naming the "immense term")."""
    if isinstance(mapping, Mapping):
        out = {k: flat_objects(v) for k, v in mapping.items()}
        if out.get("type") == "flattened":
            out = {"type": "flat_object"}
        return out
    return mapping


def _classify(exc: Exception, store: str = "opensearch") -> ReadsideError:
    """The Elasticsearch sink's classification, naming OpenSearch."""
    return classify(exc, store)


class OpenSearchSink(ElasticsearchSink):
    """Keeps views as OpenSearch documents, guarded by external versions."""

    store = "opensearch"
    classify = staticmethod(_classify)
    #: its client, made at first use (the constructor is the store's)
    _opensearch: OpenSearchClient | None = None

    def _os_client(self) -> OpenSearchClient:
        if self._opensearch is None:
            cfg = self.cfg
            self._opensearch = OpenSearchClient(
                cfg.hosts, self._auth(), cfg.timeout_s, tls_options(cfg)
            )
        return self._opensearch

    @property
    def client(self) -> elasticsearch.Elasticsearch:
        # It answers the calls the shared sink makes, as elasticsearch-py would.
        return cast("elasticsearch.Elasticsearch", self._os_client())

    def _scan(self, **kwargs: Any) -> Iterable[dict[str, Any]]:
        return self._os_client().scan(**kwargs)

    def _mappings(self, target: ViewTarget) -> dict[str, Any]:
        found: dict[str, Any] = flat_objects(super()._mappings(target))
        return found

    def close(self) -> None:
        if self._opensearch is not None:
            self._opensearch.close()
            self._opensearch = None
