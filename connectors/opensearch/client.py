"""The HTTP layer of an OpenSearch sink: opensearch-py's transport, answering
the calls the Elasticsearch sink makes.

OpenSearch speaks the REST API the Elasticsearch sink uses (bulk with
external versions, ``mget``, ``search``, aliases), but elasticsearch-py
refuses a server that is not Elasticsearch. So the sink's logic is shared
(:class:`connectors.opensearch.sink.OpenSearchSink` is an
:class:`~connectors.elasticsearch.sink.ElasticsearchSink`) and only its
client differs: :class:`OpenSearchClient` sends each of those calls as one
request through opensearch-py's transport (connection pool, retries,
timeouts), returns the parsed answer, and raises what elasticsearch-py
would raise for the same answer (:func:`translated`), so that the shared
error handling (a missing alias, a refused index creation, the
transient/fatal split of :func:`~connectors.elasticsearch.store.classify`)
holds unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import elastic_transport
import elasticsearch
import opensearchpy
from elasticsearch import exceptions as es_exceptions
from opensearchpy import helpers

#: search settings that go in the query string; the rest goes in the body
_SEARCH_PARAMS = frozenset({"allow_partial_search_results", "filter_path"})


class Answer(dict[str, Any]):
    """A parsed answer: a dict, with elasticsearch-py's ``body`` beside."""

    @property
    def body(self) -> dict[str, Any]:
        return dict(self)


def translated(exc: Exception) -> Exception:
    """The elasticsearch-py error for the answer that raised ``exc``: an
    :class:`elasticsearch.ApiError` (its subclass by status) for an HTTP
    error, a connection error or timeout of elastic-transport otherwise."""
    if isinstance(exc, opensearchpy.TransportError) and isinstance(
        exc.status_code, int
    ):
        status = exc.status_code
        cls = es_exceptions.HTTP_EXCEPTIONS.get(status, elasticsearch.ApiError)
        meta = elastic_transport.ApiResponseMeta(
            status=status,
            http_version="1.1",
            headers=elastic_transport.HttpHeaders(),
            duration=0.0,
            node=elastic_transport.NodeConfig("http", "opensearch", 80),
        )
        return cls(str(exc), meta=meta, body=exc.info)
    if isinstance(exc, opensearchpy.SSLError):
        tls = elastic_transport.TlsError(str(exc))
        tls.__cause__ = exc
        return tls
    if isinstance(exc, opensearchpy.ConnectionTimeout):
        return elastic_transport.ConnectionTimeout(str(exc))
    if isinstance(exc, opensearchpy.ConnectionError):
        return elastic_transport.ConnectionError(str(exc))
    if isinstance(exc, opensearchpy.SerializationError):
        return elastic_transport.SerializationError(str(exc))
    return exc


def _params(kwargs: Mapping[str, Any]) -> dict[str, str]:
    """Query-string parameters as OpenSearch reads them (``true``, ``a,b``)."""
    out: dict[str, str] = {}
    for key, value in kwargs.items():
        if value is None:
            continue
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, list | tuple):
            out[key] = ",".join(str(v) for v in value)
        else:
            out[key] = str(value)
    return out


class OpenSearchClient:
    """The client of one OpenSearch sink (see the module's docstring)."""

    def __init__(
        self,
        hosts: Sequence[str],
        auth: tuple[str, str] | None,
        timeout_s: float,
        tls: Mapping[str, Any] | None = None,
    ) -> None:
        """``tls``: the TLS options of ``https://`` hosts
        (:func:`connectors.elasticsearch.store.tls_options`)."""
        self.driver = opensearchpy.OpenSearch(
            list(hosts),
            http_auth=auth,
            timeout=timeout_s,
            max_retries=1,
            retry_on_timeout=False,
            **(tls or {}),
        )
        self.timeout_s = timeout_s
        self.indices = _Indices(self)

    def request(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One request; a dict answer as an :class:`Answer`, HEAD as a bool."""
        try:
            # The client's timeout, always given: without it the transport
            # would take the server-side ``timeout`` parameter (a bulk's wait
            # for active shards, "2000ms") for its own.
            found = self.driver.transport.perform_request(
                method,
                path,
                params=_params(params or {}),
                body=body,
                timeout=self.timeout_s,
            )
        except opensearchpy.OpenSearchException as exc:
            raise translated(exc) from exc
        return Answer(found) if isinstance(found, dict) else found

    def bulk(self, operations: Sequence[str], **kwargs: Any) -> Any:
        """Pre-serialized NDJSON lines, as the sink builds them."""
        return self.request("POST", "/_bulk", kwargs, "\n".join(operations) + "\n")

    def mget(self, index: str, ids: Sequence[str], source: bool | None = None) -> Any:
        params = {} if source is None else {"_source": source}
        return self.request("POST", f"/{index}/_mget", params, {"ids": list(ids)})

    def search(self, index: str, **kwargs: Any) -> Any:
        params = {k: v for k, v in kwargs.items() if k in _SEARCH_PARAMS}
        body = {k: v for k, v in kwargs.items() if k not in _SEARCH_PARAMS}
        if "from_" in body:
            body["from"] = body.pop("from_")
        return self.request("POST", f"/{index}/_search", params, body)

    def count(self, index: str) -> Any:
        return self.request("GET", f"/{index}/_count")

    def scan(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Every hit of a scrolled search (opensearch-py's helper)."""
        try:
            yield from helpers.scan(self.driver, **kwargs)
        except opensearchpy.OpenSearchException as exc:
            raise translated(exc) from exc

    def close(self) -> None:
        self.driver.close()


class _Indices:
    """The index and alias calls of the sink (``client.indices``)."""

    def __init__(self, client: OpenSearchClient) -> None:
        self._request = client.request

    def exists(self, index: str) -> bool:
        return bool(self._request("HEAD", f"/{index}"))

    def exists_alias(self, name: str, index: str | None = None) -> bool:
        path = f"/{index}/_alias/{name}" if index else f"/_alias/{name}"
        return bool(self._request("HEAD", path))

    def get(self, index: str) -> Answer:
        found: Answer = self._request("GET", f"/{index}")
        return found

    def get_mapping(self, index: str) -> Answer:
        found: Answer = self._request("GET", f"/{index}/_mapping")
        return found

    def put_mapping(self, index: str, meta: Mapping[str, Any]) -> Any:
        return self._request("PUT", f"/{index}/_mapping", None, {"_meta": meta})

    def get_alias(self, name: str) -> Answer:
        found: Answer = self._request("GET", f"/_alias/{name}")
        return found

    def create(
        self, index: str, wait_for_active_shards: str | None = None, **body: Any
    ) -> Any:
        params = {"wait_for_active_shards": wait_for_active_shards}
        return self._request("PUT", f"/{index}", params, body)

    def delete(self, index: str, ignore_unavailable: bool | None = None) -> Any:
        params = {"ignore_unavailable": ignore_unavailable}
        return self._request("DELETE", f"/{index}", params)

    def delete_alias(self, index: str, name: str) -> Any:
        return self._request("DELETE", f"/{index}/_alias/{name}")

    def update_aliases(self, actions: list[dict[str, Any]]) -> Any:
        return self._request("POST", "/_aliases", None, {"actions": actions})

    def refresh(self, index: str) -> Any:
        return self._request("POST", f"/{index}/_refresh")
